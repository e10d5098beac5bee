"""Exports read back with astropy with the same values and units."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from django.core.management import call_command

from catalogue.models import Galaxy, Survey
from catalogue.services.export import EXPORT_COLUMNS

pytestmark = [pytest.mark.django_db, pytest.mark.smoke]


@pytest.fixture
def survey():
    survey = Survey.objects.create(name="exp")
    Galaxy.objects.create(
        survey=survey,
        objid=1237648720693755918,
        ra=359.9,
        dec=-1.2,
        z=0.051,
        d25_arcmin=0.62,
        mag_g=16.1,
        magerr_g=0.02,
        mag_i=15.0,
        lum_dist_mpc=230.1,
        lum_g=3.2e10,
        ml_g=2.7,
        ml_g_err=0.3,
        chi2_r=1.1,
        split="train",
        status="ok",
    )
    Galaxy.objects.create(
        survey=survey,
        objid=2,
        ra=10.0,
        dec=5.0,
        z=0.1,
        d25_arcmin=0.3,
        mag_g=17.0,
        status="excluded",
        status_reason="D25 = 0.3 arcmin <= 0.4",
    )
    Galaxy.objects.create(survey=Survey.objects.create(name="other"), objid=3, ra=1, dec=1, z=0.2)
    return survey


@pytest.mark.parametrize(
    ("fmt", "read_format"), [("ecsv", "ascii.ecsv"), ("fits", "fits"), ("votable", "votable"), ("parquet", "parquet")]
)
@pytest.mark.usefixtures("survey")
def test_export_round_trips_values_and_units(tmp_path, fmt, read_format):
    out = tmp_path / f"cat.{fmt}"
    call_command("export_catalogue", str(out), "--format", fmt, "--survey", "exp")
    table = Table.read(out, format=read_format)
    assert len(table) == 2
    assert [c.name for c in EXPORT_COLUMNS] == table.colnames
    first = table[table["objid"] == 1237648720693755918][0]
    assert first["ra"] == pytest.approx(359.9) and first["ml_g"] == pytest.approx(2.7)
    assert first["split"] == "train" and first["status"] == "ok"
    assert str(table["ra"].unit) == "deg"
    # A g-band solar luminosity, not astropy's bolometric solLum: the name survives every format.
    assert table["ml_g"].unit.to_string() == "solMass / Lsun_g"
    assert table["lum_g"].unit.to_string() == "Lsun_g"
    assert str(table["d25_arcmin"].unit) == "arcmin"
    assert str(table["lum_dist_mpc"].unit) == "Mpc"
    assert table["ml_g"].description.startswith("target g-band mass-to-light")
    second = table[table["objid"] == 2][0]
    assert np.ma.is_masked(second["ml_g"]) or np.isnan(second["ml_g"])
    assert "D25" in second["status_reason"]
    if fmt != "votable":
        assert table.meta["SURVEY"] == "exp" and "H0=70.0" in table.meta["COSMO"]


@pytest.mark.usefixtures("survey")
def test_csv_export_is_plain_csv_for_other_tools(tmp_path):
    out = tmp_path / "cat.csv"
    call_command("export_catalogue", str(out), "--format", "csv")
    lines = out.read_text().splitlines()
    assert lines[0].startswith("objid,ra,dec,z,") and not any(line.startswith("#") for line in lines)
    assert len(lines) == 4  # header + every survey's 3 galaxies
    table = Table.read(out)  # astropy's default reader for .csv, as it is
    assert len(table) == 3 and table["objid"].dtype.kind == "i" and 1237648720693755918 in table["objid"]
    assert table[table["objid"] == 2]["status_reason"][0] == "D25 = 0.3 arcmin <= 0.4"
    assert np.ma.is_masked(table[table["objid"] == 2]["ml_g"][0])
