"""Exports read back with astropy with the same values and units."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from django.core.management import CommandError, call_command

from catalogue.columns import CATALOGUE_ML_COLUMNS
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
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no reader may warn: every unit is one VOUnit, FITS and CDS know
        table = Table.read(out, format=read_format)
    assert len(table) == 2
    # The catalogue's M/L columns follow the galaxy's (empty: no set was applied to this survey).
    assert [c.name for c in EXPORT_COLUMNS + CATALOGUE_ML_COLUMNS] == table.colnames
    assert table["ml"].unit.to_string() == "solMass / solLum" and str(table["mstar"].unit) == "solMass"
    assert "best-validated" in " ".join(table["ml_model"].description.split())
    first = table[table["objid"] == 1237648720693755918][0]
    assert first["ra"] == pytest.approx(359.9) and first["ml_g"] == pytest.approx(2.7)
    assert first["split"] == "train" and first["status"] == "ok"
    assert str(table["ra"].unit) == "deg"
    # VOUnit's solLum, the g band in the description (and the UCD where the format has one).
    described = {name: " ".join(table[name].description.split()) for name in ("ml_g", "lum_g")}  # VOTable wraps lines
    assert table["ml_g"].unit.to_string() == "solMass / solLum" and "g-band solar luminosities" in described["ml_g"]
    assert table["lum_g"].unit.to_string() == "solLum" and "g-band" in described["lum_g"]
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


# --- where an export may write ----------------------------------------------------------


def _export(out) -> str:
    call_command("export_catalogue", str(out), "--format", "csv")
    return "written"


def _refusal(out) -> str:
    with pytest.raises(CommandError) as caught:
        _export(out)
    message = str(caught.value)
    assert "\n" not in message and str(out) in message
    return message


@pytest.mark.usefixtures("survey")
def test_an_export_never_replaces_a_directory_a_fifo_or_a_device(tmp_path):
    directory = tmp_path / "a-directory"
    directory.mkdir()
    assert "it is a directory, not a regular file" in _refusal(directory)
    fifo = tmp_path / "a-fifo"
    os.mkfifo(fifo)
    assert "it is a FIFO" in _refusal(fifo) and stat.S_ISFIFO(fifo.stat().st_mode)
    device = Path("/dev/null")
    assert "it is a character device" in _refusal(device) and stat.S_ISCHR(device.stat().st_mode)
    link_to_device = tmp_path / "null-link"
    link_to_device.symlink_to(device)
    assert "(-> /dev/null)" in _refusal(link_to_device)
    assert directory.is_dir() and not list(tmp_path.glob(".*"))  # nothing replaced, no temporary file left


@pytest.mark.usefixtures("survey")
def test_an_export_writes_through_a_symlink_to_its_target_with_the_umasks_mode(tmp_path):
    target = tmp_path / "data" / "catalogue.csv"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "latest.csv"
    link.symlink_to(target)
    previous = os.umask(0o027)
    try:
        _export(link)
    finally:
        os.umask(previous)
    assert link.is_symlink() and os.readlink(link) == str(target)  # the link is kept ...
    assert target.read_text().startswith("objid,ra,dec") and len(target.read_text().splitlines()) == 4  # ... its target written
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # 0o666 less the umask, not mkstemp's 0600
    fresh = tmp_path / "fresh.csv"
    _export(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~previous


@pytest.mark.usefixtures("survey")
def test_an_unwritable_path_gets_one_line_not_a_traceback(tmp_path):
    assert "the directory" in _refusal(tmp_path / "no-such-directory" / "cat.csv")
    assert "cannot write /proc/morphomass.csv" in _refusal(Path("/proc/morphomass.csv"))
    done = subprocess.run(
        [sys.executable, "manage.py", "export_catalogue", str(tmp_path / "missing" / "x.fits"), "--format", "fits"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": ""},
    )
    assert done.returncode == 1 and done.stderr.strip().count("\n") == 0, done.stderr
    assert done.stderr.startswith("CommandError: cannot write") and "Traceback" not in done.stderr


@pytest.mark.parametrize("fmt", ["csv", "ecsv", "fits"])
def test_database_formatted_downloads_equal_the_python_writers(survey, fmt, monkeypatch):
    """On PostgreSQL, COPY writes the CSV body and a server-side cursor feeds FITS; both must read back as Python's."""
    import io
    import warnings

    from django.db import connection

    from catalogue.models import Prediction, Run, TrainedModel
    from catalogue.selectors import one_model_columns
    from catalogue.services import export

    if connection.vendor != "postgresql":
        pytest.skip("the database-formatted path is PostgreSQL's (the smoke run on SQLite is the Python path)")
    odd = Galaxy.objects.create(
        survey=survey, objid=5, ra=0.0, dec=0.0, z=0.01, mag_g=float("nan"), ml_g=1e-7, status="rejected",
        status_reason='a "quoted", comma\nand a new line; <tag> & é',
    )  # fmt: skip
    run = Run.objects.create(stage="predict", survey=survey, status="succeeded")
    model = TrainedModel.objects.create(kind="gbm", name="g_morph", survey=survey, run=run)
    Prediction.objects.create(galaxy=odd, model=model, ml_pred=1e16, out_of_support=True, support_reasons=["z", "far, away"])
    Prediction.objects.create(galaxy=survey.galaxies.get(objid=2), model=model, ml_pred=0.1, ml_lo68=float("inf"))
    predicted = one_model_columns(model)
    queryset = predicted.annotate(Galaxy.objects.filter(survey=survey))

    def read(in_database: bool) -> tuple[bytes, Table]:
        monkeypatch.setattr(export, "database_formats_rows", lambda: in_database)
        data = b"".join(export.stream_catalogue(fmt, queryset, survey, predicted))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return data, Table.read(io.BytesIO(data), format={"csv": "ascii.csv", "ecsv": "ascii.ecsv"}.get(fmt, fmt))

    from_database, database_table = read(True)
    from_python, python_table = read(False)
    if fmt == "fits":
        assert from_database == from_python  # the same bytes
    assert database_table.colnames == python_table.colnames and len(database_table) == 3
    for name in database_table.colnames:
        ours, theirs = database_table[name], python_table[name]
        assert list(np.ma.getmaskarray(ours)) == list(np.ma.getmaskarray(theirs)), name
        assert [str(v) for v in ours] == [str(v) for v in theirs], name
    row = database_table[database_table["objid"] == 5][0]
    assert row["support_reasons"] == "z; far, away" and row["out_of_support"] == 1 and row["ml_pred"] == 1e16
    assert row["status_reason"] == 'a "quoted", comma\nand a new line; <tag> & é'
