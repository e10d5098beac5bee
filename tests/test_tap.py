"""TAP 1.1 and ADQL: geometry against astropy, read-only guards, formats, UWS jobs, pyvo, taplint."""

from __future__ import annotations

import io
import shutil
import subprocess
import urllib.parse
import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io.votable import parse_single_table
from astropy.table import Table
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import connection

from catalogue.celery import app as celery_app
from catalogue.models import Galaxy, Survey, TapJob
from catalogue.tap.adql import AdqlError, translate
from pipeline.sky import healpix_index, unit_vector
from tests.run_helpers import wait_for, workers_idle
from tests.services import services_required

TABLES = {"morphomass.galaxies": True, "morphomass.predictions": False, "tap_schema.tables": False}


def _postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("TAP runs on PostgreSQL (the SQLite default answers that it needs it: tested below)")


# --- translation (no database) ---------------------------------------------------------------


@pytest.mark.smoke
@pytest.mark.parametrize(
    ("adql", "message"),
    [
        ("SELECT * FROM auth_user", "not one this service serves"),
        ("SELECT * FROM public.catalogue_galaxy", "not one this service serves"),
        ("SELECT pg_sleep(10) FROM galaxies", "PG_SLEEP is not supported"),
        ("DELETE FROM galaxies", "syntax error"),
        ("SELECT TOP 1 * FROM galaxies; DROP TABLE galaxies", "one SELECT statement"),
        ("SELECT INTERSECTS(CIRCLE(1, 2, 3), CIRCLE(1, 2, 3)) FROM galaxies", "one of its geometries is a POINT"),
        ("SELECT AREA(CIRCLE(1, 2, 3)) FROM galaxies", "AREA is not supported"),
        ("SELECT POINT(ra, dec) FROM galaxies", "POINT is supported inside CONTAINS"),
        ("SELECT * FROM galaxies WHERE 1 = CONTAINS(POINT(ra, dec), POLYGON(1, 1, 2, 2, 1, 2, 2, 1))", "convex"),
        ("SELECT * FROM galaxies WHERE 1 = CONTAINS(POINT('GALACTIC', ra, dec), CIRCLE(1, 2, 3))", "ICRS"),
        ("SELECT * FROM galaxies WHERE 2 = CONTAINS(POINT(ra, dec), CIRCLE(1, 2, 3))", "= 1 or = 0"),
        ("", "empty"),
    ],
)
def test_refused_queries_name_what_is_refused(adql, message):
    with pytest.raises(AdqlError, match=message):
        translate(adql, TABLES)


@pytest.mark.smoke
def test_translation_writes_tables_qualified_top_as_limit_and_cones_on_the_sky_index():
    sql = translate("SELECT DISTINCT TOP 3 survey FROM galaxies ORDER BY survey", TABLES).sql
    assert sql == 'SELECT DISTINCT survey FROM "morphomass"."galaxies" ORDER BY survey LIMIT 3'
    cone = translate("SELECT g.objid FROM galaxies AS g WHERE 1 = CONTAINS(POINT(g.ra, g.dec), CIRCLE(10, 20, 0.5))", TABLES)
    assert "g.healpix BETWEEN" in cone.sql and "g.sky_x" in cone.sql and cone.tables == ["morphomass.galaxies"]
    # a table without the sky index gets the exact test on its own ra, dec, without index ranges
    other = translate("SELECT * FROM predictions AS p WHERE 1 = CONTAINS(POINT(p.ra, p.dec), CIRCLE(10, 20, 1))", TABLES)
    assert "healpix" not in other.sql and "radians(p.dec)" in other.sql


# --- on PostgreSQL ---------------------------------------------------------------------------


@pytest.fixture
def sky(db):  # noqa: ARG001 - the database the rows go in
    """Galaxies everywhere, crowded at RA = 0/360 and near the poles (as the cone search's test)."""
    _postgresql()
    rng = np.random.default_rng(5)
    n, crowd = 1500, 400
    ra = np.concatenate([rng.uniform(0, 360, n), np.mod(rng.normal(0, 2, crowd), 360), rng.uniform(0, 360, crowd)])
    dec = np.concatenate([np.rad2deg(np.arcsin(rng.uniform(-1, 1, n))), rng.normal(0, 2, crowd), 90 - rng.uniform(0, 3, crowd)])
    survey = Survey.objects.create(name="tapsky")
    x, y, z = unit_vector(ra, dec)
    Galaxy.objects.bulk_create(
        Galaxy(survey=survey, objid=i, ra=float(r), dec=float(d), z=0.05, healpix=int(h), sky_x=a, sky_y=b, sky_z=c)
        for i, (r, d, h, a, b, c) in enumerate(zip(ra, dec, healpix_index(ra, dec), x, y, z, strict=True))
    )
    return SkyCoord(ra * u.deg, dec * u.deg)


def _sync(client, adql: str, **params) -> Table:
    reply = client.get("/tap/sync", {"LANG": "ADQL", "QUERY": adql, **params})
    assert reply.status_code == 200, reply.content[:500]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return parse_single_table(io.BytesIO(b"".join(reply.streaming_content))).to_table()


def _error(client, adql: str) -> str:
    reply = client.get("/tap/sync", {"LANG": "ADQL", "QUERY": adql})
    assert reply.status_code == 400
    text = reply.content.decode()
    assert 'name="QUERY_STATUS" value="ERROR"' in text
    return text


CONES = [(0.0, 0.0, 1.5), (359.5, 0.5, 2.0), (180.0, 89.0, 2.0), (10.0, 90.0, 1.0), (45.0, 30.0, 10.0), (300.0, 10.0, 60.0)]


@pytest.mark.parametrize(("ra", "dec", "radius"), CONES)
def test_adql_cones_match_astropy_separations(client, sky, ra, dec, radius):
    expected = set(np.flatnonzero(sky.separation(SkyCoord(ra * u.deg, dec * u.deg)).deg <= radius).tolist())
    contains = _sync(
        client,
        f"SELECT objid FROM morphomass.galaxies WHERE 1 = CONTAINS(POINT('ICRS', ra, dec), "
        f"CIRCLE('ICRS', {ra}, {dec}, {radius}))",
        MAXREC=10**6,
    )
    assert set(contains["objid"].tolist()) == expected
    distance = _sync(
        client,
        f"SELECT g.objid, DISTANCE(POINT(g.ra, g.dec), POINT({ra}, {dec})) AS d"
        f" FROM morphomass.galaxies AS g WHERE DISTANCE(POINT(g.ra, g.dec), POINT({ra}, {dec})) <= {radius}",
        MAXREC=10**6,
    )
    assert set(distance["objid"].tolist()) == expected
    separations = sky[np.asarray(distance["objid"])].separation(SkyCoord(ra * u.deg, dec * u.deg)).deg
    assert np.allclose(np.asarray(distance["d"]), separations, atol=1e-9, rtol=0)


def test_adql_box_and_polygon_match_independent_tests(client, sky):
    ra, dec = sky.ra.deg, sky.dec.deg
    box = _sync(client, "SELECT objid FROM morphomass.galaxies WHERE 1 = CONTAINS(POINT(ra, dec), BOX('ICRS', 359, 0, 6, 3))")
    inside = (np.abs(dec) <= 1.5) & (np.mod(ra - 356.0 + 720.0, 360.0) <= 6.0)
    assert set(box["objid"].tolist()) == set(np.flatnonzero(inside).tolist()) and inside.sum() > 20
    # a convex polygon (clockwise, across RA = 0), against a gnomonic projection where its edges are straight
    vertices = [(357.0, -2.0), (357.5, 2.5), (2.0, 3.0), (3.0, -1.0)]
    polygon = ", ".join(f"{a}, {d}" for a, d in vertices)
    found = _sync(client, f"SELECT objid FROM morphomass.galaxies WHERE 1 = CONTAINS(POINT(ra, dec), POLYGON({polygon}))")
    center = SkyCoord(0 * u.deg, 0.5 * u.deg)
    frame = center.skyoffset_frame()

    def plane(coords):
        offset = coords.transform_to(frame)
        lon, lat = offset.lon.rad, offset.lat.rad
        return np.tan(lon), np.tan(lat) / np.cos(lon)  # gnomonic: great circles are lines

    px, py = plane(sky)
    vx, vy = plane(SkyCoord([a for a, _ in vertices] * u.deg, [d for _, d in vertices] * u.deg))
    near = sky.separation(center).deg < 60
    sides = [(vx[(i + 1) % 4] - vx[i]) * (py - vy[i]) - (vy[(i + 1) % 4] - vy[i]) * (px - vx[i]) for i in range(4)]
    expected = near & (np.all(np.array(sides) <= 0, axis=0) | np.all(np.array(sides) >= 0, axis=0))
    assert set(found["objid"].tolist()) == set(np.flatnonzero(expected).tolist()) and expected.sum() > 20


@pytest.mark.usefixtures("sky")
def test_queries_run_read_only_and_see_only_the_tap_tables(client):
    assert "not one this service serves" in _error(client, "SELECT * FROM auth_user")
    assert "not one this service serves" in _error(client, 'SELECT * FROM "public"."catalogue_galaxy"')
    assert "syntax error" in _error(client, "UPDATE morphomass.galaxies SET z = 1")
    assert "one SELECT statement" in _error(client, "SELECT TOP 1 objid FROM morphomass.galaxies; DELETE FROM catalogue_galaxy")
    # PostgreSQL's own guards hold too: the transaction is read-only, the role reads the TAP schemas only
    from catalogue.tap import query

    with connection.cursor() as cursor:
        cursor.execute("SAVEPOINT guard")
        query._guard(cursor, 5)
        with pytest.raises(Exception, match="read-only transaction"):
            cursor.execute("CREATE TABLE tap_escape (x int)")
        cursor.execute("ROLLBACK TO SAVEPOINT guard")
        cursor.execute("SAVEPOINT guard")
        query._guard(cursor, 5)
        with pytest.raises(Exception, match="permission denied"):
            cursor.execute("SELECT count(*) FROM public.auth_user")
        cursor.execute("ROLLBACK TO SAVEPOINT guard")
    assert Galaxy.objects.count() == 2300  # nothing was written, and the test's own transaction still writes
    assert "does not exist" in _error(client, "SELECT nope FROM morphomass.galaxies")


def test_maxrec_overflow_and_the_formats_read_back(client, sky):
    reply = client.get("/tap/sync", {"LANG": "ADQL", "QUERY": "SELECT objid, ra, dec FROM morphomass.galaxies", "MAXREC": 7})
    text = b"".join(reply.streaming_content).decode()
    assert text.count("<TR>") == 7 and 'name="QUERY_STATUS" value="OVERFLOW"' in text
    assert text.index("OVERFLOW") > text.index("</TABLE>")  # after the table, where DALI puts it
    fits = client.get(
        "/tap/sync", {"QUERY": "SELECT TOP 5 objid, ra, z FROM morphomass.galaxies ORDER BY objid", "FORMAT": "fits"}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = Table.read(io.BytesIO(b"".join(fits.streaming_content)), format="fits")
    assert list(table["objid"]) == [0, 1, 2, 3, 4] and table["ra"].unit == u.deg
    csv = client.get("/tap/sync", {"QUERY": "SELECT TOP 3 objid, ra FROM morphomass.galaxies ORDER BY objid", "FORMAT": "csv"})
    rows = Table.read(b"".join(csv.streaming_content).decode(), format="ascii.csv")
    assert list(rows["objid"]) == [0, 1, 2] and np.allclose(rows["ra"], sky.ra.deg[:3])
    assert (
        "FORMAT='xlsx' is not served"
        in client.get("/tap/sync", {"QUERY": "SELECT TOP 1 objid FROM galaxies", "FORMAT": "xlsx"}).content.decode()
    )
    assert "QUERY is required" in client.get("/tap/sync", {"LANG": "ADQL"}).content.decode()
    assert "NUL byte" in client.get("/tap/sync", {"QUERY": "SELECT\x00"}).content.decode()


@pytest.mark.usefixtures("sky")
def test_tap_schema_describes_every_column_from_the_one_column_description(client):
    from catalogue.columns import column
    from catalogue.tap import schema

    columns = _sync(client, "SELECT table_name, column_name, unit, ucd, description, datatype FROM TAP_SCHEMA.columns")
    rows = {(r["table_name"], r["column_name"]): r for r in columns}
    for table in schema.TABLES:
        assert {name for t, name in rows if t == table.qualified} == set(table.columns)
    ml = rows[("morphomass.predictions", "ml_pred")]
    assert (ml["unit"], ml["ucd"], ml["description"]) == (
        column("ml_pred").unit,
        column("ml_pred").ucd,
        column("ml_pred").description,
    )
    assert rows[("morphomass.galaxies", "ra")]["datatype"] == "double"
    keys = _sync(
        client,
        "SELECT k.from_table, k.target_table, c.from_column FROM TAP_SCHEMA.keys AS k "
        "JOIN TAP_SCHEMA.key_columns AS c ON c.key_id = k.key_id",
    )
    pairs = {(r["from_table"], r["target_table"], r["from_column"]) for r in keys}
    assert ("morphomass.predictions", "morphomass.galaxies", "galaxy_id") in pairs
    tables = client.get("/tap/tables").content.decode()
    assert "<name>morphomass.catalogue</name>" in tables and "<unit>solMass/solLum</unit>" in tables


@pytest.mark.django_db
def test_the_catalogue_table_and_the_cone_search_carry_the_catalogue_ml_as_the_api(client):
    _postgresql()
    from benchmarks.generated_survey import make_survey

    survey, model = make_survey(300, seed=3)
    api = {
        row["objid"]: row["catalogue_ml"]
        for row in client.get("/api/galaxies/", {"survey": survey.name, "page_size": 1000}).json()["results"]
    }
    # TAP's catalogue table: per galaxy the same model and M/L as the API's catalogue_ml
    rows = _sync(
        client,
        "SELECT c.objid, c.model_set, c.model_name, c.ml_pred, c.ml_hi68, c.mstar_pred, c.out_of_support "
        f"FROM morphomass.catalogue AS c WHERE c.survey = '{survey.name}'",
    )
    assert len(rows) == 300 and set(rows["model_set"]) == {model.model_set.name}
    assert len(set(rows["model_name"])) > 1  # the choice differs between galaxies (inputs they have)
    for row in rows:
        chosen = api[int(row["objid"])]
        assert (str(row["model_name"]), float(row["ml_pred"]), float(row["ml_hi68"])) == (
            chosen["ml_model"],
            chosen["ml"],
            chosen["ml_hi68"],
        )
        assert float(row["mstar_pred"]) == pytest.approx(chosen["mstar"]) and int(row["out_of_support"]) == int(
            chosen["out_of_support"]
        )
    # the cone search's VERB=2 rows carry the catalogue's M/L, as the API gives it (a model per galaxy)
    cone = client.get("/scs/", {"RA": 150, "DEC": 0, "SR": 3, "VERB": 2})
    scs = parse_single_table(io.BytesIO(cone.content)).to_table()
    assert len(scs) > 10 and len({str(m) for m in scs["ml_model"]}) > 1  # the choice differs between galaxies
    for row in scs:
        chosen = api[int(row["objid"])]
        assert (str(row["ml_model"]), float(row["ml"]), str(row["ml_model_set"])) == (
            chosen["ml_model"],
            chosen["ml"],
            chosen["ml_model_set"],
        )
    counts = _sync(client, "SELECT morphology, COUNT(*) AS n FROM morphomass.catalogue GROUP BY morphology ORDER BY n DESC")
    assert int(np.sum(counts["n"])) == 300


@pytest.mark.usefixtures("sky")
def test_async_jobs_follow_uws_and_belong_to_their_owner(client):
    reply = client.post("/tap/async", {"LANG": "ADQL", "QUERY": "SELECT TOP 4 objid FROM morphomass.galaxies ORDER BY objid"})
    assert reply.status_code == 303
    url = urllib.parse.urlparse(reply["Location"]).path
    assert client.get(f"{url}/phase").content == b"PENDING"
    assert client.post(f"{url}/phase", {"PHASE": "RUN"}).status_code == 303
    job = TapJob.objects.get()
    assert job.phase == "COMPLETED" and job.rows == 4  # tasks run in-process here; the worker test below queues them
    document = client.get(url).content.decode()
    assert "<uws:phase>COMPLETED</uws:phase>" in document and f"{url}/results/result" in document
    result = parse_single_table(io.BytesIO(b"".join(client.get(f"{url}/results/result").streaming_content)))
    assert list(result.to_table()["objid"]) == [0, 1, 2, 3]
    # a bad query makes a job all the same, which ends in ERROR with the reason
    bad = urllib.parse.urlparse(client.post("/tap/async", {"QUERY": "SELECT * FROM auth_user", "PHASE": "RUN"})["Location"]).path
    assert client.get(f"{bad}/phase").content == b"ERROR"
    assert "not one this service serves" in client.get(f"{bad}/error").content.decode()
    # a user's job is theirs alone
    owner = User.objects.create_user("tapuser", password="pw")
    client.force_login(owner)
    mine = urllib.parse.urlparse(client.post("/tap/async", {"QUERY": "SELECT TOP 1 objid FROM galaxies"})["Location"]).path
    assert "tapuser" in client.get(mine).content.decode()
    client.logout()
    assert client.get(mine).status_code == 404 and mine.rsplit("/", 1)[1] not in client.get("/tap/async").content.decode()
    assert client.delete(url).status_code == 303 and client.get(url).status_code == 404


@pytest.mark.smoke
@pytest.mark.django_db
def test_sqlite_default_answers_that_tap_needs_postgresql(client):
    if connection.vendor == "postgresql":
        pytest.skip("the SQLite default's answer (the smoke run)")
    reply = client.get("/tap/sync", {"QUERY": "SELECT TOP 1 * FROM galaxies"})
    assert reply.status_code == 501 and "TAP needs PostgreSQL" in reply.content.decode()
    assert "<vosi:available>false</vosi:available>" in client.get("/tap/availability").content.decode()


# --- a live server: pyvo, a real worker, STILTS ----------------------------------------------


@pytest.fixture
def live_catalogue(transactional_db, live_server):  # noqa: ARG001 - the live server's database
    _postgresql()
    cache.clear()
    from benchmarks.generated_survey import make_survey

    survey, model = make_survey(2000, seed=11)
    return live_server.url, survey, model


@pytest.mark.django_db(transaction=True)
def test_pyvo_sync_async_overflow_and_errors(live_catalogue, start_worker):
    import pyvo

    url, survey, _ = live_catalogue
    service = pyvo.dal.TAPService(f"{url}/tap")
    cone = service.run_sync(
        "SELECT g.objid, g.ra, g.dec FROM morphomass.galaxies AS g "
        "WHERE 1 = CONTAINS(POINT('ICRS', g.ra, g.dec), CIRCLE('ICRS', 150, 0, 1))"
    ).to_table()
    from catalogue.selectors import galaxies_in_cone

    assert set(cone["objid"]) == set(galaxies_in_cone(150, 0, 1).values_list("objid", flat=True)) and len(cone) > 10
    joined = service.run_sync(
        "SELECT TOP 20 g.objid, p.model_name, p.ml_pred, p.ml_lo68, p.ml_hi68 FROM morphomass.galaxies AS g "
        "JOIN morphomass.predictions AS p ON p.galaxy_id = g.galaxy_id WHERE p.ml_pred > 3 ORDER BY p.ml_pred DESC"
    ).to_table()
    assert len(joined) == 20 and np.all(np.diff(joined["ml_pred"]) <= 0) and joined["ml_pred"].unit == u.solMass / u.solLum
    overflow = service.run_sync("SELECT objid FROM morphomass.galaxies", maxrec=25)
    assert len(overflow) == 25 and overflow.query_status == "OVERFLOW"
    with pytest.raises(pyvo.dal.DALQueryError, match="not one this service serves"):
        service.run_sync("SELECT username, password FROM auth_user")
    with pytest.raises(pyvo.dal.DALQueryError, match="syntax error"):
        service.run_sync("DROP TABLE catalogue_galaxy")
    with pytest.raises(pyvo.dal.DALQueryError, match="does not exist"):
        service.run_sync("SELECT nothing FROM morphomass.galaxies")
    # async through a real cpu worker: submitted, run, polled, fetched, deleted
    start_worker("cpu")
    job = service.submit_job("SELECT morphology, COUNT(*) AS n FROM morphomass.catalogue GROUP BY morphology")
    job.run()
    job.wait(phases=["COMPLETED", "ERROR", "ABORTED"], timeout=120)
    assert job.phase == "COMPLETED", job.phase
    counts = job.fetch_result().to_table()
    assert int(np.sum(counts["n"])) == 2000
    job_url = job.url
    job.delete()
    assert not TapJob.objects.exists()
    # ABORT stops a query the worker is running: PostgreSQL cancels it, nothing is kept
    slow = service.submit_job(
        "SELECT COUNT(*) AS n FROM morphomass.galaxies AS a, morphomass.galaxies AS b, morphomass.galaxies AS c"
    )
    slow.execution_duration = 60  # bounded, should the abort fail
    slow.run()
    slow.wait(phases=["EXECUTING"], timeout=60)

    def still_running() -> bool:
        with connection.cursor() as cursor:
            pattern = 'FETCH FORWARD % FROM "tap_result"'
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()", [pattern])
            return cursor.fetchone()[0] > 0

    wait_for(still_running, 20, "the slow query to run", interval=0.1)
    slow.abort()
    assert slow.phase == "ABORTED"
    wait_for(lambda: not still_running(), 20, "PostgreSQL to cancel the query", interval=0.2)
    workers_idle(celery_app, 30)  # the job's task has ended: it kept nothing
    assert slow.phase == "ABORTED" and not TapJob.objects.get(pk=slow.job_id).result
    slow.delete()
    with pytest.raises(pyvo.dal.DALServiceError):
        pyvo.dal.AsyncTAPJob(job_url).phase  # noqa: B018 - reading it asks the server


def _stilts() -> str:
    found = shutil.which("stilts")
    if found is None:
        if services_required():
            pytest.fail("REQUIRE_SERVICES=1 but Debian's stilts is not installed (apt-get install stilts)", pytrace=False)
        pytest.skip("stilts is not installed (apt-get install stilts)")
    return found


@pytest.mark.django_db(transaction=True)
def test_taplint_and_votlint_report_no_errors(live_catalogue):
    stilts = _stilts()
    url, _, _ = live_catalogue
    report = subprocess.run(
        [stilts, "taplint", f"tapurl={url}/tap", "report=EW", "maxtable=8"], capture_output=True, text=True, timeout=600
    ).stdout
    assert "Totals: Errors: 0; Warnings: 0" in report, report[-3000:]
    # every stage ran: uploads (declared in the capabilities) and the DALI examples among them
    assert "Section UPL: Make queries with table uploads" in report and "Section EXA" in report, report[-3000:]
    for query in (
        "SELECT TOP 50 * FROM morphomass.catalogue",
        "SELECT TOP 50 * FROM morphomass.predictions",
        "SELECT objid FROM morphomass.galaxies",  # an overflow: the INFO after the table
    ):
        document = f"{url}/tap/sync?" + urllib.parse.urlencode({"LANG": "ADQL", "QUERY": query, "MAXREC": 20})
        lint = subprocess.run([stilts, "votlint", f"votable={document}"], capture_output=True, text=True, timeout=120)
        assert "ERROR" not in lint.stdout + lint.stderr, lint.stdout + lint.stderr
    for cone in ("RA=150&DEC=0&SR=0.3&VERB=3", "RA=150&DEC=0&SR=0.3&VERB=1&SURVEY=nowhere"):  # rows, and an error
        lint = subprocess.run([stilts, "votlint", f"votable={url}/scs/?{cone}"], capture_output=True, text=True, timeout=120)
        assert "ERROR" not in lint.stdout + lint.stderr, lint.stdout + lint.stderr


@pytest.mark.usefixtures("sky")
def test_the_adql_constructs_the_docs_name_run(client):
    queries = {
        "SELECT TOP 5 objid FROM morphomass.galaxies WHERE survey ILIKE 'TAP%' ORDER BY objid OFFSET 2": [2, 3, 4, 5, 6],
        "SELECT survey, COUNT(*) AS n FROM morphomass.galaxies GROUP BY survey HAVING COUNT(*) > 10": None,
        "SELECT TOP 3 g.objid FROM morphomass.galaxies AS g JOIN morphomass.surveys AS s USING (survey_id) "
        "WHERE s.name = 'tapsky' AND g.objid BETWEEN 10 AND 20 ORDER BY g.objid": [10, 11, 12],
        "SELECT TOP 2 objid FROM morphomass.galaxies NATURAL JOIN morphomass.surveys ORDER BY objid": [0, 1],
        "SELECT TOP 2 objid FROM morphomass.galaxies WHERE objid IN (SELECT objid FROM morphomass.galaxies "
        "WHERE objid < 2) ORDER BY objid": [0, 1],
        "SELECT TOP 1 objid, ROUND(ra, 1) AS r, MOD(objid, 3) AS m, LOG10(100) AS l, TRUNCATE(2.7) AS t "
        "FROM morphomass.galaxies WHERE objid = 5": [5],
    }
    for adql, objids in queries.items():
        table = _sync(client, adql)
        if objids is not None:
            assert list(table["objid"]) == objids, adql
        else:
            assert list(table["n"]) == [2300]
    row = _sync(
        client,
        "SELECT TOP 1 objid, MOD(objid, 3) AS m, LOG10(100) AS l, TRUNCATE(2.7) AS t FROM morphomass.galaxies WHERE objid = 5",
    )
    assert (row["m"][0], row["l"][0], row["t"][0]) == (2, 2, 2)


@pytest.mark.django_db(transaction=True)
def test_the_docs_pyvo_and_stilts_examples_run(live_catalogue):
    import re
    import shlex
    from pathlib import Path

    url, survey, _ = live_catalogue
    text = (Path(__file__).resolve().parent.parent / "docs" / "querying.md").read_text()
    section = text[text.index("## TAP and ADQL") : text.index("## From Python")]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    block = block.replace("http://127.0.0.1:8000", url).replace("survey = 'demo'", f"survey = '{survey.name}'")
    scope: dict = {}
    exec(compile(block, "docs/querying.md", "exec"), scope)  # noqa: S102 - the documentation's own example
    from catalogue.models import Prediction
    from catalogue.selectors import galaxies_in_cone

    near = galaxies_in_cone(150.0, 0.0, 0.5)
    assert len(scope["near"]) == Prediction.objects.filter(galaxy__in=near).count() > near.count() > 0  # every model's
    assert int(np.sum(scope["per_class"]["n"])) == 2000
    command = re.search(r"    (stilts tapquery .*?ofmt=csv)", section, re.S).group(1)
    arguments = shlex.split(command.replace("\\\n", " "))
    arguments = [a.replace("http://127.0.0.1:8000", url) for a in arguments]
    arguments[0] = _stilts()
    out = subprocess.run(arguments, capture_output=True, text=True, timeout=120)
    lines = out.stdout.strip().splitlines()
    assert lines, (arguments, out.stderr)
    assert lines[0] == "objid,survey,ml_g,ml_pred" and len(lines) == 11, out.stdout + out.stderr


@pytest.mark.usefixtures("sky")
def test_job_phases_abort_wait_duration_destruction_and_the_reaper(client, settings):
    from datetime import timedelta

    from django.utils import timezone

    from catalogue.tap import jobs

    def made(**params) -> str:
        reply = client.post("/tap/async", {"QUERY": "SELECT TOP 1 objid FROM morphomass.galaxies", **params})
        assert reply.status_code == 303
        return urllib.parse.urlparse(reply["Location"]).path

    job = made(RUNID="mine", MAXREC="3")
    document = client.get(job).content.decode()
    assert "<uws:runId>mine</uws:runId>" in document and '<uws:parameter id="MAXREC">3</uws:parameter>' in document
    # a pending job's duration and parameters change; WAIT on a pending job returns at once
    assert client.post(f"{job}/executionduration", {"EXECUTIONDURATION": "30"}).status_code == 303
    assert client.get(f"{job}/executionduration").content == b"30"
    assert client.post(f"{job}/parameters", {"QUERY": "SELECT TOP 2 objid FROM morphomass.galaxies"}).status_code == 303
    assert TapJob.objects.get(run_id="mine").query.startswith("SELECT TOP 2")
    assert "<uws:phase>PENDING</uws:phase>" in client.get(job, {"WAIT": "5", "PHASE": "QUEUED"}).content.decode()
    assert client.post(f"{job}/phase", {"PHASE": "SUSPEND"}).status_code == 400
    # an aborted job stays aborted: it does not run, and its parameters are frozen
    assert client.post(f"{job}/phase", {"PHASE": "ABORT"}).status_code == 303
    assert client.get(f"{job}/phase").content == b"ABORTED"
    assert client.post(f"{job}/phase", {"PHASE": "RUN"}).status_code == 400
    assert client.post(f"{job}/parameters", {"QUERY": "SELECT 1"}).status_code == 400
    # a job that ran: its results, the list's filters
    done = made(PHASE="RUN")
    assert client.get(f"{done}/phase").content == b"COMPLETED"
    listed = client.get("/tap/async", {"PHASE": "COMPLETED"}).content.decode()
    assert done.rsplit("/", 1)[1] in listed and job.rsplit("/", 1)[1] not in listed
    assert client.get("/tap/async", {"LAST": "x"}).status_code == 400
    # destruction: past it, the job and its result file go
    stored = TapJob.objects.get(pk=done.rsplit("/", 1)[1])
    path = stored.result.path
    assert (
        client.post(f"{done}/destruction", {"DESTRUCTION": (timezone.now() - timedelta(seconds=1)).isoformat()}).status_code
        == 303
    )
    client.get("/tap/async")
    assert not TapJob.objects.filter(pk=stored.pk).exists()
    # a later destruction than the service keeps jobs is cut to its limit (UTC when no offset is given)
    kept = made()
    assert client.post(f"{kept}/destruction", {"DESTRUCTION": "2999-01-01T00:00:00"}).status_code == 303
    limit = timezone.now() + timedelta(days=settings.TAP_JOB_DAYS)
    assert abs((TapJob.objects.get(pk=kept.rsplit("/", 1)[1]).destruction - limit).total_seconds()) < 60 and not __import__(
        "os"
    ).path.exists(path)
    # the reaper fails a job whose worker went silent past its duration and the grace
    settings.TAP_REAP_GRACE_S = 0
    lost = TapJob.objects.create(
        phase="EXECUTING",
        query="SELECT 1",
        maxrec=1,
        execution_duration=1,
        started=timezone.now() - timedelta(seconds=5),
        destruction=timezone.now() + timedelta(days=1),
    )
    assert jobs.reap()["failed"] == 1
    lost.refresh_from_db()
    assert lost.phase == "ERROR" and "stopped answering" in lost.error


@pytest.mark.smoke
@pytest.mark.django_db
def test_the_adql_page_shows_rows_with_units_errors_and_downloads(client):
    page = client.get("/adql/").content.decode()
    assert "morphomass.catalogue" in page and "solMass/solLum" in page  # the tables and their columns, even before a query
    if connection.vendor != "postgresql":
        reply = client.get("/adql/", {"query": "SELECT TOP 1 objid FROM morphomass.galaxies"})
        assert "TAP needs PostgreSQL" in reply.content.decode()
        return
    survey = Survey.objects.create(name="adqlpage")
    Galaxy.objects.bulk_create(Galaxy(survey=survey, objid=i, ra=10.0 + i, dec=0.0, z=0.05) for i in range(5))
    reply = client.get("/adql/", {"query": "SELECT objid, ra FROM morphomass.galaxies ORDER BY objid", "maxrec": 3})
    text = reply.content.decode()
    assert text.count("<tr><td>") == 3 and "more rows match" in text and "[deg]" in text
    assert "/tap/sync?LANG=ADQL&amp;QUERY=SELECT+objid" in text and "FORMAT=fits" in text
    refused = client.get("/adql/", {"query": "SELECT * FROM auth_user"}).content.decode()
    assert 'role="alert"' in refused and "not one this service serves" in refused
