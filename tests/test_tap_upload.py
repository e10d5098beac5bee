"""Bring your own list: TAP UPLOAD crossmatches, ADQL 2.1, DataLink, the DALI examples and every common client.

The crossmatch is checked against astropy's ``search_around_sky`` on a sky crowded at RA = 0
and at the pole; the clients (pyvo, astroquery, STILTS) against a live server.
"""

from __future__ import annotations

import io
import subprocess
import urllib.parse
import urllib.request
import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord, search_around_sky
from astropy.io.votable import parse_single_table
from astropy.table import Table
from django.core.files.base import ContentFile

from catalogue.models import Galaxy, Image, Prediction, TapJob
from catalogue.tap import examples
from catalogue.tap.adql import AdqlError, SkyColumns, cover_order, match_column, translate
from tests import test_tap
from tests.test_tap import _stilts

# the TAP tests' fixtures: a crowded sky of galaxies, and a live server over a generated catalogue
sky = test_tap.sky
live_catalogue = test_tap.live_catalogue

UPLOAD_SKY = SkyColumns(ra="ra", dec="dec", x="_sky_x", y="_sky_y", z="_sky_z", healpix="_healpix", covers=True, id=None)
TABLES = {"morphomass.galaxies": True, "tap_upload.mine": UPLOAD_SKY}
NAMES = {"tap_upload.mine": 'pg_temp."tap_upload_mine"'}


def _votable(table: Table) -> bytes:
    buffer = io.BytesIO()
    table.write(buffer, format="votable")
    return buffer.getvalue()


def _result(reply) -> Table:
    body = b"".join(reply.streaming_content) if reply.streaming else reply.content
    assert reply.status_code == 200, body[:800]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return parse_single_table(io.BytesIO(body)).to_table()


def _upload(client, adql: str, table: Table | bytes, name: str = "mine", **params):
    data = table if isinstance(table, bytes) else _votable(table)
    form = {"LANG": "ADQL", "QUERY": adql, "UPLOAD": f"{name},param:part1", "part1": io.BytesIO(data), **params}
    return client.post("/tap/sync", form)


def _positions(catalogue: SkyCoord, n_near: int, n_empty: int, seed: int = 3) -> tuple[Table, np.ndarray]:
    """Positions within an arcsec of catalogue galaxies (which ones: the indices returned), and empty sky."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(catalogue), n_near, replace=False)
    angles, offsets = rng.uniform(0, 360, n_near) * u.deg, rng.uniform(0, 1.0, n_near) * u.arcsec
    offsets = catalogue[chosen].directional_offset_by(angles, offsets)
    empty = []
    while len(empty) < n_empty:
        candidate = SkyCoord(rng.uniform(0, 360) * u.deg, np.rad2deg(np.arcsin(rng.uniform(-1, 1))) * u.deg)
        if candidate.separation(catalogue).min() > 1 * u.arcmin:
            empty.append(candidate)
    ra = np.concatenate([offsets.ra.deg, [c.ra.deg for c in empty]])
    dec = np.concatenate([offsets.dec.deg, [c.dec.deg for c in empty]])
    table = Table({"myid": np.arange(len(ra)), "ra": ra, "dec": dec})
    table["ra"].unit = table["dec"].unit = u.deg
    return table, chosen


# --- translation (no database) ---------------------------------------------------------------


@pytest.mark.smoke
def test_a_crossmatch_with_an_upload_joins_on_each_rows_matches():
    sql = translate(
        "SELECT u.myid, g.objid FROM TAP_UPLOAD.mine AS u JOIN morphomass.galaxies AS g "
        "ON 1 = CONTAINS(POINT(g.ra, g.dec), CIRCLE(u.ra, u.dec, 2.0 / 3600))",
        TABLES,
        NAMES,
    )
    assert sql.covers == {"tap_upload.mine": {2.0 / 3600}}
    assert f"(g.galaxy_id = ANY(u.{match_column(2.0 / 3600)}))" in sql.sql and match_column(2.0 / 3600) == "_match2000000"
    assert 'FROM pg_temp."tap_upload_mine" AS u' in sql.sql and sql.tables == ["tap_upload.mine", "morphomass.galaxies"]
    distance = translate(
        "SELECT u.myid FROM TAP_UPLOAD.mine AS u, morphomass.galaxies AS g "
        "WHERE DISTANCE(POINT(u.ra, u.dec), POINT(g.ra, g.dec)) < 0.01",
        TABLES,
        NAMES,
    )
    assert distance.covers == {"tap_upload.mine": {0.01}} and "g.galaxy_id = ANY(u._match36000000)" in distance.sql
    # a radius too large for nine pixels round a row: the exact test alone
    wide = translate(
        "SELECT u.myid FROM TAP_UPLOAD.mine AS u, morphomass.galaxies AS g "
        "WHERE 1 = CONTAINS(POINT(g.ra, g.dec), CIRCLE(u.ra, u.dec, 30))",
        TABLES,
        NAMES,
    )
    assert cover_order(30) is None and wide.covers == {} and "_match" not in wide.sql


@pytest.mark.smoke
@pytest.mark.parametrize(
    ("adql", "expected"),
    [
        ("SELECT LOWER(survey), UPPER('x') FROM galaxies WHERE LOWER(survey) = 'lower(a)'", "lower(survey) , upper('x')"),
        ("SELECT COALESCE(mag_i, -1) FROM galaxies", "coalesce(mag_i, - 1)"),
        ("SELECT IN_UNIT(ra, 'arcsec') FROM galaxies", "((ra) * 3600.0)"),
        ("WITH near AS (SELECT objid FROM galaxies) SELECT * FROM near", 'WITH "near" AS'),
        ("SELECT * FROM galaxies WHERE 1 = INTERSECTS(CIRCLE(10, 20, 1), POINT(ra, dec))", "healpix BETWEEN"),
    ],
)
def test_adql_21_constructs_translate(adql, expected):
    assert expected in translate(adql, TABLES, NAMES, {"ra": "deg"}).sql


@pytest.mark.smoke
@pytest.mark.parametrize(
    ("adql", "message"),
    [
        ("SELECT IN_UNIT(ra, 'mag') FROM galaxies", "cannot be written in 'mag'"),
        ("SELECT IN_UNIT(objid, 'deg') FROM galaxies", "has no unit"),
        ("SELECT * FROM galaxies WHERE 1 = INTERSECTS(CIRCLE(1, 2, 3), CIRCLE(1, 2, 3))", "one of its geometries is a POINT"),
        ("SELECT PG_SLEEP(1) FROM galaxies", "PG_SLEEP is not supported"),
    ],
)
def test_what_adql_21_still_refuses_is_named(adql, message):
    with pytest.raises(AdqlError, match=message):
        translate(adql, TABLES, NAMES, {"ra": "deg"})


@pytest.mark.smoke
def test_a_chunked_body_is_decoded_within_its_limit_and_a_bad_one_refused():
    from catalogue.request_bodies import BodyError, decode_chunked

    body = b"4;ext=1\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nTrailer: x\r\n\r\n"
    assert decode_chunked(io.BytesIO(body), 100) == b"Wikipedia in \r\n\r\nchunks."
    with pytest.raises(BodyError) as over:
        decode_chunked(io.BytesIO(body), 8)
    assert over.value.status == 413
    for broken in (b"zz\r\nab\r\n0\r\n\r\n", b"10\r\nshort", b"4\r\nWiki"):
        with pytest.raises(BodyError) as bad:
            decode_chunked(io.BytesIO(broken), 100)
        assert bad.value.status == 400


# --- on PostgreSQL ---------------------------------------------------------------------------


@pytest.mark.parametrize("radius_arcsec", [2.0, 40.0, 1800.0])
def test_upload_crossmatch_matches_astropy_once_per_pair(client, sky, radius_arcsec):
    table, chosen = _positions(sky, 60, 40)
    uploaded = SkyCoord(table["ra"], table["dec"])
    mine, theirs, _, _ = search_around_sky(uploaded, sky, radius_arcsec * u.arcsec)
    expected = sorted(zip(mine.tolist(), theirs.tolist(), strict=True))
    for form in (
        f"1 = CONTAINS(POINT('ICRS', g.ra, g.dec), CIRCLE('ICRS', u.ra, u.dec, {radius_arcsec} / 3600.0))",
        f"DISTANCE(POINT(u.ra, u.dec), POINT(g.ra, g.dec)) <= {radius_arcsec / 3600.0!r}",
    ):
        adql = f"SELECT u.myid, g.objid FROM TAP_UPLOAD.mine AS u JOIN morphomass.galaxies AS g ON {form}"
        found = _result(_upload(client, adql, table, MAXREC=10**6))
        assert sorted(zip(found["myid"].tolist(), found["objid"].tolist(), strict=True)) == expected, form
    if radius_arcsec == 2.0:  # each catalogue galaxy once, the empty sky nothing
        assert sorted(theirs.tolist()) == sorted(chosen.tolist()) and set(mine.tolist()) == set(range(60))


def test_upload_results_hide_the_index_and_keep_units_and_names(client, sky):
    table, _ = _positions(sky, 5, 0)
    table["Note"] = ["a", "b", "", "d", "e"]
    table["mag"] = np.ma.masked_array([1.0, 2.0, 3.0, 4.0, 5.0], mask=[0, 0, 1, 0, 0])
    table["mag"].unit = u.mag
    found = _result(_upload(client, "SELECT * FROM TAP_UPLOAD.mine ORDER BY myid", table))
    assert found.colnames == ["myid", "ra", "dec", "note", "mag"]  # ADQL names are case-blind: lower case
    assert found["ra"].unit == u.deg and found["mag"].unit == u.mag and found["mag"].mask[2]
    assert np.allclose(found["ra"], table["ra"]) and list(found["note"][:2]) == ["a", "b"]
    # the temporary table was the query's alone
    reply = client.get("/tap/sync", {"LANG": "ADQL", "QUERY": "SELECT * FROM TAP_UPLOAD.mine"})
    assert reply.status_code == 400 and b"not one this service serves" in reply.content


@pytest.mark.usefixtures("sky")
def test_bad_uploads_get_error_documents(client, settings):
    good = Table({"ra": [1.0], "dec": [2.0]})
    query = "SELECT * FROM TAP_UPLOAD.mine"
    cases = [
        (lambda: _upload(client, query, good, name="1bad"), "not an ADQL identifier"),
        (lambda: _upload(client, query, b"<VOTABLE><RESOURCE><TABLE><FIELD"), "not a VOTable, CSV or FITS table"),
        (lambda: client.post("/tap/sync", {"QUERY": query, "UPLOAD": "mine,param:nothing"}), "no part of that name"),
        (lambda: client.post("/tap/sync", {"QUERY": query, "UPLOAD": "mine,ftp://example.org/t.xml"}), "from an http(s) URL"),
        (lambda: client.post("/tap/sync", {"QUERY": query, "UPLOAD": "mine,http://127.0.0.1:9/t.xml"}), "private address"),
        (lambda: _upload(client, query, Table({"a": [[1, 2]]})), "holds arrays"),
    ]
    settings.TAP_UPLOAD_MAX_ROWS = 3
    cases.append((lambda: _upload(client, query, Table({"ra": [1.0] * 4, "dec": [2.0] * 4})), "at most 3 rows"))
    for send, message in cases:
        reply = send()
        text = reply.content.decode()
        assert reply.status_code == 400 and 'value="ERROR"' in text and message in text, (message, text[:600])
    settings.TAP_UPLOAD_MAX_BYTES = 100
    reply = _upload(client, query, good)
    assert reply.status_code == 400 and b"TAP_UPLOAD_MAX_BYTES" in reply.content


def test_an_async_job_reads_its_upload_and_deletes_it_with_the_job(client, sky):
    table, chosen = _positions(sky, 10, 5)
    adql = (
        "SELECT u.myid, g.objid FROM TAP_UPLOAD.mine AS u JOIN morphomass.galaxies AS g "
        "ON 1 = CONTAINS(POINT(g.ra, g.dec), CIRCLE(u.ra, u.dec, 2.0 / 3600))"
    )
    form = {"LANG": "ADQL", "QUERY": adql, "UPLOAD": "mine,param:t", "t": io.BytesIO(_votable(table)), "PHASE": "RUN"}
    reply = client.post("/tap/async", form)
    assert reply.status_code == 303
    job = TapJob.objects.get()
    assert job.phase == "COMPLETED", job.error
    stored = list(job.uploads.values())
    from django.core.files.storage import default_storage

    assert len(stored) == 1 and default_storage.exists(stored[0])
    found = _result(client.get(f"/tap/async/{job.pk}/results/result"))
    assert sorted(found["objid"].tolist()) == sorted(chosen.tolist())
    client.delete(f"/tap/async/{job.pk}")
    assert not TapJob.objects.exists() and not default_storage.exists(stored[0])


@pytest.mark.usefixtures("sky")
def test_adql_21_runs_on_postgresql(client):
    queries = {
        "SELECT TOP 3 objid, LOWER(UPPER(survey)) AS s, COALESCE(mag_i, -1) AS m FROM morphomass.galaxies "
        "WHERE survey ILIKE 'TAPSKY' ORDER BY objid OFFSET 1": lambda t: (
            list(t["objid"]) == [1, 2, 3] and set(t["s"]) == {"tapsky"} and list(t["m"]) == [-1, -1, -1]
        ),
        "WITH few AS (SELECT objid FROM morphomass.galaxies WHERE objid < 3) SELECT objid FROM few ORDER BY objid": lambda t: (
            list(t["objid"]) == [0, 1, 2]
        ),
        "SELECT objid, IN_UNIT(dec, 'arcsec') AS d, dec FROM morphomass.galaxies WHERE objid = 7": lambda t: np.isclose(
            t["d"][0], t["dec"][0] * 3600
        ),
        "SELECT COUNT(*) AS n FROM morphomass.galaxies WHERE 1 = INTERSECTS(POINT(ra, dec), CIRCLE(0, 0, 2))": lambda t: (
            t["n"][0] > 50
        ),
        "SELECT objid FROM morphomass.galaxies WHERE objid = 1 UNION SELECT objid FROM morphomass.galaxies WHERE objid = 2": (
            lambda t: sorted(t["objid"]) == [1, 2]
        ),
    }
    for adql, check in queries.items():
        reply = client.get("/tap/sync", {"LANG": "ADQL", "QUERY": adql})
        assert check(_result(reply)), adql
    capabilities = client.get("/tap/capabilities").content.decode()
    assert "ADQL#v2.1" in capabilities and "features-adql-string" in capabilities and "upload-inline" in capabilities
    assert "Not served: CAST" in capabilities


# --- a live server: pyvo, astroquery, STILTS, DataLink, the examples -------------------------


def _cutouts(galaxies: list[Galaxy]) -> None:
    """Small g (and for the first, i) FITS cutouts for some galaxies, in the media storage."""
    from astropy.io import fits

    for k, galaxy in enumerate(galaxies):
        for band in ("g", "i") if k == 0 else ("g",):
            buffer = io.BytesIO()
            fits.PrimaryHDU(np.full((4, 4), k, dtype=np.float32)).writeto(buffer)
            image = Image(galaxy=galaxy, band=band)
            image.file.save(f"{galaxy.objid}_{band}.fits", ContentFile(buffer.getvalue()), save=False)
            image.save()


@pytest.mark.django_db(transaction=True)
def test_clients_upload_follow_datalink_and_run_the_examples(live_catalogue, settings):
    import pyvo
    from astroquery.utils.tap.core import TapPlus

    url, survey, _ = live_catalogue
    galaxies = list(Galaxy.objects.filter(survey=survey).order_by("objid"))
    positions = SkyCoord([g.ra for g in galaxies] * u.deg, [g.dec for g in galaxies] * u.deg)
    table, chosen = _positions(positions, 50, 50, seed=8)
    service = pyvo.dal.TAPService(f"{url}/tap")
    crossmatch = (
        "SELECT u.myid, c.objid, c.ml_pred FROM TAP_UPLOAD.mine AS u JOIN morphomass.catalogue AS c "
        "ON 1 = CONTAINS(POINT('ICRS', c.ra, c.dec), CIRCLE('ICRS', u.ra, u.dec, 2.0 / 3600))"
    )
    expected = sorted(galaxies[i].objid for i in chosen)
    sync = service.run_sync(crossmatch, uploads={"mine": table}).to_table()
    assert sorted(sync["objid"].tolist()) == expected and set(sync["myid"]) == set(range(50))
    assert np.all(np.isfinite(sync["ml_pred"])) and sync["ml_pred"].unit == u.solMass / u.solLum
    job = service.submit_job(crossmatch, uploads={"mine": table})
    job.run()
    job.wait(phases=["COMPLETED", "ERROR"], timeout=120)
    assert job.phase == "COMPLETED" and sorted(job.fetch_result().to_table()["objid"].tolist()) == expected
    job.delete()
    with pytest.raises(pyvo.dal.DALQueryError, match="not an ADQL identifier"):
        service.run_sync("SELECT * FROM TAP_UPLOAD.mine", uploads={"my-list": table})
    # a table at a URL (upload-http): here the service's own result, so the host is allowed by the setting
    settings.TAP_UPLOAD_FETCH_PRIVATE = True
    five = f"{url}/tap/sync?" + urllib.parse.urlencode(
        {"LANG": "ADQL", "QUERY": "SELECT TOP 5 objid AS theirs, ra, dec FROM morphomass.galaxies ORDER BY objid"}
    )
    fetched = service.run_sync(
        "SELECT u.theirs, g.objid FROM TAP_UPLOAD.five AS u JOIN morphomass.galaxies AS g "
        "ON 1 = CONTAINS(POINT(g.ra, g.dec), CIRCLE(u.ra, u.dec, 1.0 / 3600))",
        uploads={"five": five},
    ).to_table()
    assert list(fetched["theirs"]) == list(fetched["objid"]) == [g.objid for g in galaxies[:5]]
    settings.TAP_UPLOAD_MAX_BYTES = 200
    with pytest.raises(pyvo.dal.DALQueryError, match="is over 200 bytes"):
        service.run_sync("SELECT * FROM TAP_UPLOAD.five", uploads={"five": five})
    settings.TAP_UPLOAD_MAX_BYTES = 32 * 1024 * 1024

    # astroquery (it sends Accept: text/plain): sync, async, the tables
    tap = TapPlus(url=f"{url}/tap", verbose=False)
    rows = tap.launch_job("SELECT TOP 7 objid, ra, dec FROM morphomass.galaxies ORDER BY objid").get_results()
    assert len(rows) == 7
    async_rows = tap.launch_job_async("SELECT TOP 5 objid FROM morphomass.catalogue ORDER BY objid").get_results()
    assert len(async_rows) == 5
    # the tables by name (VOSI detail=min); TapPlus reads columns only with ESA's own attributes (astroquery #1597)
    assert "morphomass.galaxies" in {t.get_qualified_name() for t in tap.load_tables(only_names=True)}

    # DataLink from a cone search: each galaxy's links, the cutout reached
    _cutouts(galaxies[:3])
    near = galaxies[0]
    cone = pyvo.dal.SCSService(f"{url}/scs/").search(pos=(near.ra, near.dec), radius=0.05, verbosity=2)
    links = {}
    for datalinks in cone.iter_datalinks():
        for link in datalinks:
            links.setdefault(link.semantics, []).append(link)
    this = [link for link in links["#this"] if link.access_url.endswith(f"/galaxies/{near.pk}/g.fits")]
    assert this and this[0].content_type == "application/fits"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from astropy.io import fits

        with fits.open(this[0].access_url) as cutout:
            assert cutout[0].data.shape == (4, 4)
    assert any(link.access_url.endswith(f"/galaxies/{near.pk}/i.fits") for link in links["#counterpart"])
    assert {"#documentation", "#derivation", "#auxiliary", "#preview"} <= set(links)
    predictions = [link for link in links["#derivation"] if f"galaxy_id+%3D+{near.pk}" in link.access_url][0]
    assert len(Table.read(predictions.access_url, format="votable")) == Prediction.objects.filter(galaxy=near).count() >= 2
    stilts = _stilts()
    document = f"{url}/datalink/links?" + urllib.parse.urlencode([("ID", near.pk), ("ID", "nothing"), ("ID", 10**9)])
    lint = subprocess.run([stilts, "votlint", f"votable={document}"], capture_output=True, text=True, timeout=120)
    assert "ERROR" not in lint.stdout + lint.stderr and "WARNING" not in lint.stdout + lint.stderr, lint.stdout + lint.stderr
    faults = Table.read(document, format="votable")
    huge = Table.read(f"{url}/datalink/links?ID={'9' * 40}", format="votable")  # no bigint: a fault, not a 500
    assert list(huge["error_message"]) == [f"UsageFault: ID {'9' * 40!r} is not a galaxy_id (a whole number)"]
    assert list(faults["error_message"][-2:]) == ["UsageFault: ID 'nothing' is not a galaxy_id (a whole number)",
                                                  f"NotFoundFault: no galaxy {10**9}"]  # fmt: skip
    # a TAP result carrying galaxy_id carries the descriptor too
    # (pyvo matches a batch's links to rows by typed value, so a numeric galaxy_id is followed row by row)
    tap_rows = service.run_sync(f"SELECT galaxy_id, objid FROM morphomass.galaxies WHERE galaxy_id = {near.pk}")
    followed = tap_rows.iter_datalinks(preserve_order=True)
    assert any(link.semantics == "#this" for datalinks in followed for link in datalinks)

    # the DALI examples: each runs (the upload one with the table) and returns rows
    page = urllib.request.urlopen(f"{url}/tap/examples").read().decode()  # noqa: S310 - the live test server
    assert page.count('typeof="example"') == len(examples.EXAMPLES) >= 6
    centre = (near.ra, near.dec)
    for example in examples.EXAMPLES:
        assert f'id="{example.id}"' in page
        uploads = {"mine": table} if example.upload else None
        result = service.run_sync(example.text(centre), uploads=uploads, maxrec=100_000).to_table()
        assert len(result) > 0, example.id


@pytest.mark.django_db(transaction=True)
def test_the_docs_upload_and_datalink_examples_run(live_catalogue, tmp_path, monkeypatch):
    """docs/querying.md's crossmatch from pyvo, astroquery and STILTS, and its DataLink block, as written."""
    import re
    import shlex
    from pathlib import Path

    url, _, _ = live_catalogue
    galaxies = list(Galaxy.objects.order_by("objid")[:2])
    _cutouts(galaxies)
    text = (Path(__file__).resolve().parent.parent / "docs" / "querying.md").read_text()
    section = text[text.index("## Your own list") : text.index("## From Python")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 3
    # the positions in the docs are anywhere: put them on two catalogue galaxies
    here = [(g.ra, g.dec) for g in galaxies]
    first = blocks[0].replace("[150.1, 151.2]", repr([p[0] for p in here])).replace("[0.2, -0.3]", repr([p[1] for p in here]))
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    for block in (first, blocks[1]):
        block = block.replace("http://127.0.0.1:8000", url)
        exec(compile(block, "docs/querying.md", "exec"), scope)  # noqa: S102 - the documentation's own example
        if "mine" in scope and not (tmp_path / "mine.vot").exists():
            scope["mine"].write(tmp_path / "mine.vot", format="votable")
    assert sorted(scope["matched"]["objid"]) == sorted(g.objid for g in galaxies)  # astroquery's, the last
    assert "morphomass.catalogue" in scope["names"]
    command = re.search(r"    (stilts tapquery .*?ofmt=csv)", section, re.S).group(1)
    arguments = [a.replace("http://127.0.0.1:8000", url) for a in shlex.split(command.replace("\\\n", " "))]
    arguments[0] = _stilts()
    out = subprocess.run(arguments, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert len(out.stdout.strip().splitlines()) == 3, out.stdout + out.stderr  # a header and the two galaxies
    datalink = blocks[2].replace("http://127.0.0.1:8000", url).replace("(150.0, 0.0)", repr(here[0]))
    exec(compile(datalink, "docs/querying.md", "exec"), scope)  # noqa: S102 - the documentation's own example
    assert f"{url}/galaxies/{galaxies[0].pk}/g.fits" in scope["cutouts"]
