"""Cone search through the HEALPix index agrees with brute-force SkyCoord separations."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord

from catalogue.models import Galaxy, Survey
from catalogue.selectors import galaxies_in_cone
from pipeline.sky import INDEX_ORDER, cone_index_ranges, healpix_index, unit_vector

pytestmark = [pytest.mark.django_db, pytest.mark.smoke]


@pytest.fixture
def sky():
    """Random galaxies everywhere, plus crowds at RA = 0/360 and near both poles."""
    rng = np.random.default_rng(12)
    n = 1500
    ra = rng.uniform(0, 360, n)
    dec = np.rad2deg(np.arcsin(rng.uniform(-1, 1, n)))
    crowd = 600
    ra = np.concatenate([ra, np.mod(rng.normal(0, 2, crowd), 360), rng.uniform(0, 360, crowd), rng.uniform(0, 360, crowd)])
    dec = np.concatenate([dec, rng.normal(0, 2, crowd), 90 - rng.uniform(0, 3, crowd), -90 + rng.uniform(0, 3, crowd)])
    survey = Survey.objects.create(name="sky")
    x, y, z = unit_vector(ra, dec)
    Galaxy.objects.bulk_create(
        Galaxy(survey=survey, objid=i, ra=float(r), dec=float(d), z=0.05, healpix=int(h), sky_x=a, sky_y=b, sky_z=c)
        for i, (r, d, h, a, b, c) in enumerate(zip(ra, dec, healpix_index(ra, dec), x, y, z, strict=True))
    )
    return ra, dec


CONES = [
    (0.0, 0.0, 1.5),
    (359.5, 0.5, 2.0),
    (0.3, -1.0, 0.7),
    (180.0, 89.5, 2.0),
    (10.0, 90.0, 1.0),
    (200.0, -88.5, 2.5),
    (45.0, 30.0, 10.0),
    (123.4, -45.6, 0.2),
    (300.0, 10.0, 60.0),
    (0.0, 0.0, 0.01),
]


@pytest.mark.parametrize(("ra", "dec", "radius"), CONES)
def test_cone_matches_brute_force(sky, ra, dec, radius):
    all_ra, all_dec = sky
    separation = SkyCoord(all_ra * u.deg, all_dec * u.deg).separation(SkyCoord(ra * u.deg, dec * u.deg)).deg
    expected = set(np.flatnonzero(separation <= radius).tolist())
    found = set(galaxies_in_cone(ra, dec, radius).values_list("objid", flat=True))
    assert found == expected


def test_cone_uses_few_index_ranges():
    assert len(cone_index_ranges(10, 20, 0.5)) < 40
    assert len(cone_index_ranges(10, 89.9, 3)) < 80


@pytest.mark.parametrize(("ra", "dec", "radius"), [(10, 20, 0.5), (359.9, 0, 0.01), (0, 89.99, 2.0), (200, -45, 5 / 3600)])
def test_candidate_area_stays_close_to_the_cone(ra, dec, radius):
    """The HEALPix ranges cover at most a few times the cone's area (pixels of half the radius)."""
    fine_pixels = sum(hi - lo for lo, hi in cone_index_ranges(ra, dec, radius))
    fine_pixel_sr = 4 * np.pi / (12 * 4**INDEX_ORDER)
    cone_sr = 2 * np.pi * (1 - np.cos(np.deg2rad(radius)))
    assert 1.0 <= fine_pixels * fine_pixel_sr / cone_sr < 4.0


def test_cone_is_one_sql_query_without_id_lists():
    sql = str(galaxies_in_cone(10.0, 20.0, 1.0).query)
    assert "healpix" in sql and "sky_x" in sql and " IN (" not in sql


def test_bad_cone_arguments_are_rejected():
    with pytest.raises(ValueError, match="radius"):
        cone_index_ranges(0, 0, 0)
    with pytest.raises(ValueError, match="dec"):
        cone_index_ranges(0, 95, 1)


@pytest.mark.django_db
@pytest.mark.parametrize("in_database", [True, False])
def test_cone_search_rows_the_same_from_the_database_or_python_and_overflow_is_reported(monkeypatch, in_database):
    """PostgreSQL formats the SCS rows itself; they must read back as Python's, overflow included."""
    import io
    import warnings

    from astropy.io.votable import parse
    from django.db import connection
    from django.test import Client

    from catalogue.api import scs
    from catalogue.models import Galaxy, Survey
    from catalogue.services import export
    from pipeline.sky import healpix_index, unit_vector

    if in_database and connection.vendor != "postgresql":
        pytest.skip("the database-formatted rows are PostgreSQL's")
    monkeypatch.setattr(export, "database_formats_rows", lambda: in_database)
    survey = Survey.objects.create(name="scs-rows")
    ra, dec = np.array([150.0, 150.01, 150.02, 150.03]), np.array([2.0, 2.01, 2.02, 2.03])
    x, y, z = unit_vector(ra, dec)
    for i, h in enumerate(healpix_index(ra, dec)):
        Galaxy.objects.create(
            survey=survey, objid=10 + i, ra=ra[i], dec=dec[i], healpix=int(h), sky_x=x[i], sky_y=y[i], sky_z=z[i],
            z=[0.05, float("nan"), 0.1, None][i], mag_g=15.0, morphology=["disk", "a<b & c>d", "", "edge-on"][i],
            status="ok" if i in (0, 2) else "excluded",  # z NaN (NULL in SQLite) or missing: not in the sample
        )  # fmt: skip

    def table(url: str):
        reply = Client().get(url)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # astropy reads it without a complaint
            document = parse(io.BytesIO(reply.content))
        return document.resources[0], document.get_first_table().to_table()

    resource, rows = table("/scs/?RA=150.015&DEC=2.015&SR=0.1&VERB=2&SURVEY=scs-rows")
    assert list(rows["objid"]) == [10, 11, 12, 13] and not resource.infos
    assert list(rows["ra"]) == list(ra) and list(np.ma.getmaskarray(rows["z"])) == [False, True, False, True]
    assert list(rows["morphology"]) == ["disk", "a<b & c>d", "", "edge-on"] and rows["z"][0] == 0.05
    assert set(rows["survey"]) == {"scs-rows"}
    # the survey's name is written into the kept statement: a rename must reach the next answer
    Survey.objects.filter(pk=survey.pk).update(name="scs <rows> & co")
    _, rows = table("/scs/?RA=150.015&DEC=2.015&SR=0.1&VERB=2&SURVEY=scs+%3Crows%3E+%26+co")
    assert list(rows["survey"]) == ["scs <rows> & co"] * 4
    Survey.objects.filter(pk=survey.pk).update(name="scs-rows")
    monkeypatch.setattr(scs, "MAX_RECORDS", 3)
    resource, rows = table("/scs/?RA=150.015&DEC=2.015&SR=0.1&VERB=1&SURVEY=scs-rows")
    assert list(rows["objid"]) == [10, 11, 12]
    assert [(i.name, i.value, i.content) for i in resource.infos] == [
        ("QUERY_STATUS", "OVERFLOW", "only the first 3 rows; use a smaller SR")
    ]
