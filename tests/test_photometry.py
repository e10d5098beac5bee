"""Luminosities, the M/L target and its error, against numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from pipeline import units
from pipeline.images.photometry import luminosity_lsun, ml_from_stellar_mass, nanomaggies_to_lsun


def test_the_sun_at_10_pc_is_one_g_band_solar_luminosity():
    assert luminosity_lsun(5.11, 1e-5, "g") == pytest.approx(1.0, rel=1e-12)
    assert luminosity_lsun(0.11, 1e-5, "g") == pytest.approx(100.0, rel=1e-12)  # 5 mag brighter
    # 1 nanomaggy is m = 22.5: at 10 pc, 10**(-0.4 (22.5 - 5.11)) = 1.107e-7 Lsun,g.
    assert nanomaggies_to_lsun(1.0, 1e-5, "g") == pytest.approx(1.1066e-7, rel=1e-4)


def test_a_tenth_of_a_dex_in_mass_alone_is_a_23_percent_ml_error():
    ml, err = ml_from_stellar_mass(10.0, 0.1, 5.11, 0.0, 1e-5)
    assert ml == pytest.approx(1e10, rel=1e-12)  # 10**10 Msun over 1 Lsun,g
    assert err / ml == pytest.approx(0.2303, abs=5e-5)
    # 0.05 mag adds 4.6% in quadrature: sqrt(0.2303^2 + 0.0461^2) = 0.2348.
    _, err_with_mag = ml_from_stellar_mass(10.0, 0.1, 5.11, 0.05, 1e-5)
    assert err_with_mag / ml == pytest.approx(0.2348, abs=5e-5)


def test_files_write_vounit_solar_units_and_code_keeps_the_g_band_unit_apart():
    import warnings

    import astropy.units as u

    assert units.LUMINOSITY == "solLum" and units.MASS_TO_LIGHT == "solMass/solLum"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for text in (units.LUMINOSITY, units.MASS_TO_LIGHT, units.LUMINOSITY_PER_PIXEL, units.STELLAR_MASS):
            for syntax in ("vounit", "fits", "cds"):
                u.Unit(text, format=syntax)  # every VO and FITS reader parses them
    assert not units.LSUN_G.is_equivalent("solLum")  # in code, a g-band solar luminosity is not bolometric


def test_files_exported_before_with_lsun_g_still_read_back(tmp_path):
    units.enable()
    table = Table({"ml_g": np.array([2.5])})
    table["ml_g"].unit = units.ML_G
    table.write(tmp_path / "t.ecsv")
    assert Table.read(tmp_path / "t.ecsv")["ml_g"].unit == units.ML_G
