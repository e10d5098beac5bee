"""Ingest of survey bundles: every fault reported, nothing lost, idempotent, fast paths."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from astropy.cosmology import FlatLambdaCDM
from astropy.table import Table
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command

from catalogue.models import Galaxy, GZ2Votes, Image, Survey
from catalogue.services.ingest import ingest_bundle
from pipeline.bundles import reader as bundle_io
from pipeline.bundles import sample
from pipeline.simulate.survey import FAULT_KINDS, LATE_FAULTS

pytestmark = pytest.mark.django_db

INGEST_FAULTS = [k for k in FAULT_KINDS if k not in LATE_FAULTS]
#: The rejection kind each simulated fault must produce.
EXPECTED_KIND = {
    "corrupt_fits": "bad_image",
    "missing_fits": "missing_image",
    "nan_image": "bad_image",
    "duplicate_objid": "duplicate_objid",
    "missing_redshift": "missing_redshift",
    "negative_redshift": "negative_redshift",
    "nonpositive_error": "nonpositive_error",
    "unparseable_number": "unparseable_number",
    "missing_wcs": "bad_image",
}


@pytest.fixture
def ingested(synthetic_bundle):
    return ingest_bundle(synthetic_bundle, "synthetic")


def test_every_fault_is_reported_by_objid_and_reason(ingested, synthetic_truth):
    faults = {int(o): f for o, f in zip(synthetic_truth["objid"], synthetic_truth["fault"], strict=True) if f}
    by_objid = {}
    for rejection in ingested.rejections:
        by_objid.setdefault(rejection["objid"], []).append(rejection)
    for objid, fault in faults.items():
        if fault in LATE_FAULTS:
            continue
        assert objid in by_objid, f"{fault} for {objid} not reported"
        kinds = {r["kind"] for r in by_objid[objid]}
        assert EXPECTED_KIND[fault] in kinds, (fault, by_objid[objid])
        assert all(r["reason"] for r in by_objid[objid])
    reasons = {r["kind"]: r["reason"] for r in ingested.rejections}
    assert "16.2.1" in reasons["unparseable_number"]
    assert "-0.02" in reasons["negative_redshift"]
    assert "finite" in next(r["reason"] for r in ingested.rejections if faults.get(r["objid"]) == "nan_image")
    assert "WCS" in next(r["reason"] for r in ingested.rejections if faults.get(r["objid"]) == "missing_wcs")
    assert len(ingested.rejections) == len(INGEST_FAULTS)


def test_every_good_galaxy_is_present_and_rejected_ones_are_marked(ingested, synthetic_truth):
    survey = Survey.objects.get(name="synthetic")
    faults = {int(o): f for o, f in zip(synthetic_truth["objid"], synthetic_truth["fault"], strict=True) if f}
    stored = dict(Galaxy.objects.filter(survey=survey).values_list("objid", "status"))
    assert set(stored) == {int(o) for o in synthetic_truth["objid"]}  # the duplicate row adds no galaxy
    for objid, status in stored.items():
        fault = faults.get(objid)
        if fault is None or fault in LATE_FAULTS or fault == "duplicate_objid":
            assert status in ("ok", "excluded")
        else:
            assert status == "rejected"
            assert Galaxy.objects.get(survey=survey, objid=objid).status_reason
    assert ingested.catalogue_rows == len(synthetic_truth) + 1  # + the duplicate line
    assert ingested.accepted + ingested.excluded + ingested.rejected == len(synthetic_truth)
    assert (
        ingested.excluded_by_reason.get("high_chi2", 0)
        == Galaxy.objects.filter(survey=survey, status="excluded", chi2_r__gte=5).count()
    )


@pytest.mark.usefixtures("ingested")
def test_images_gz2_and_stars_are_stored(synthetic_bundle):
    survey = Survey.objects.get(name="synthetic")
    g_images = Image.objects.filter(galaxy__survey=survey, band="g")
    assert g_images.count() == survey.galaxies.exclude(status="rejected").count()
    assert Image.objects.filter(galaxy__survey=survey, band="i").count() >= g_images.count()
    image = g_images.first()
    assert default_storage.exists(image.file.name)
    assert image.pixscale_arcsec == pytest.approx(0.396) and len(image.checksum) == 64
    gz2_rows = sum(1 for _ in open(synthetic_bundle / "gz2.csv")) - 1
    assert 0 < GZ2Votes.objects.filter(galaxy__survey=survey).count() <= gz2_rows
    votes = GZ2Votes.objects.filter(galaxy__survey=survey).first()
    assert votes.probabilities.shape == (37,)
    assert votes.probabilities[:3].sum() == pytest.approx(1, abs=1e-3)
    assert survey.has_star_catalogue
    with_stars = [g for g in survey.galaxies.all() if g.extra.get("stars")]
    assert with_stars and all(len(s) == 3 for g in with_stars for s in g.extra["stars"])


@pytest.mark.usefixtures("ingested")
def test_target_ml_comes_from_gswlc_with_propagated_error(synthetic_bundle):
    gswlc = bundle_io.read_gswlc(synthetic_bundle / "gswlc.dat")
    galaxy = Galaxy.objects.filter(survey__name="synthetic", status="ok").first()
    row = gswlc[gswlc["objid"] == galaxy.objid][0]
    # Written out by hand from docs/bundles.md, with astropy's cosmology directly.
    d_l_pc = FlatLambdaCDM(H0=70, Om0=0.3).luminosity_distance(galaxy.z).to_value("pc")
    lum = 10 ** (-0.4 * (galaxy.mag_g - 5 * np.log10(d_l_pc / 10) - 5.11))
    assert galaxy.lum_g == pytest.approx(lum, rel=1e-9)
    assert galaxy.ml_g == pytest.approx(10 ** row["log_mstar"] / lum, rel=1e-9)
    rel = np.hypot(np.log(10) * row["log_mstar_err"], 0.4 * np.log(10) * galaxy.magerr_g)
    assert galaxy.ml_g_err == pytest.approx(galaxy.ml_g * rel, rel=1e-9)
    assert galaxy.ml_source == "gswlc"
    assert galaxy.chi2_r == pytest.approx(row["chi2_r"])


@pytest.mark.usefixtures("ingested")
def test_split_is_seeded_and_about_ten_percent_test():
    splits = list(Galaxy.objects.filter(survey__name="synthetic", status="ok").values_list("split", flat=True))
    assert set(splits) <= {"train", "val", "test"}
    assert 0.03 < splits.count("test") / len(splits) < 0.2
    assert 0.03 < splits.count("val") / len(splits) < 0.2
    assert not Galaxy.objects.filter(survey__name="synthetic").exclude(status="ok").exclude(split="").exists()
    objid = np.arange(10_000, dtype=np.int64)
    split = sample.assign_splits(objid, np.ones(10_000, bool), seed=3)
    assert np.mean(split == "test") == pytest.approx(0.10, abs=0.01)
    assert np.mean(split == "val") == pytest.approx(0.09, abs=0.01)
    assert (split == sample.assign_splits(objid, np.ones(10_000, bool), seed=3)).all()
    assert not (split == sample.assign_splits(objid, np.ones(10_000, bool), seed=4)).all()


def test_reingest_is_idempotent_and_updates_changed_rows(synthetic_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(synthetic_bundle, copy)
    first = ingest_bundle(copy, "again")
    n_galaxies, n_images = Galaxy.objects.count(), Image.objects.count()
    splits = dict(Galaxy.objects.values_list("objid", "split"))
    second = ingest_bundle(copy, "again")
    assert (Galaxy.objects.count(), Image.objects.count()) == (n_galaxies, n_images)
    assert second.images_stored == 0 and second.images_unchanged == first.images_stored
    assert dict(Galaxy.objects.values_list("objid", "split")) == splits
    objid = Galaxy.objects.filter(status="ok").values_list("objid", flat=True).first()
    with open(copy / "catalogue.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        if row["objid"] == str(objid):
            row["d25_arcmin"] = "0.987"
    with open(copy / "catalogue.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    ingest_bundle(copy, "again")
    assert Galaxy.objects.get(objid=objid).d25_arcmin == pytest.approx(0.987)
    assert Galaxy.objects.count() == n_galaxies


def test_unusable_bundles_fail_with_a_message_naming_the_problem(tmp_path, synthetic_bundle):
    with pytest.raises(CommandError, match="no catalogue.csv"):
        call_command("ingest_survey", str(tmp_path))
    (tmp_path / "catalogue.csv").write_text("objid,ra,dec\n1,2,3\n")
    with pytest.raises(
        CommandError, match=r"lacks required column\(s\) z, d25_arcmin, mag_g; it has objid, ra, dec"
    ):  # mag_i is optional
        call_command("ingest_survey", str(tmp_path))
    broken_gz2 = tmp_path / "gz2"
    shutil.copytree(synthetic_bundle, broken_gz2, ignore=shutil.ignore_patterns("images"))
    (broken_gz2 / "gz2.csv").write_text("dr8objid,t01_smooth_or_features_a01_smooth_weighted_fraction\n1,0.5\n")
    with pytest.raises(CommandError, match="GZ2 column"):
        call_command("ingest_survey", str(broken_gz2))
    assert not Survey.objects.exists()


def test_command_writes_report_and_summary(synthetic_bundle, tmp_path, capsys):
    import json

    call_command("ingest_survey", str(synthetic_bundle), "--name", "cli", "--report", str(tmp_path / "r.json"))
    out = capsys.readouterr().out
    assert "problems recorded: 9" in out and "duplicate_objid: 1" in out
    assert "1 line not counted as galaxies (a repeated objid" in out  # a duplicate is no extra galaxy
    galaxies = Survey.objects.get(name="cli").galaxies.count()
    assert f"survey cli: {galaxies + 1} catalogue lines" in out and f"  {galaxies} galaxies: " in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["rejections"]) == 9 and report["survey"] == "cli"
    assert Survey.objects.get(name="cli").report["accepted"] == report["accepted"]


def test_fits_catalogue_and_catalogue_only_ingest(tmp_path, synthetic_bundle):
    table = Table.read(synthetic_bundle / "catalogue.csv", format="ascii.csv")
    good = table[[isinstance(v, (int, np.integer)) for v in table["objid"]]]
    good = good[np.isfinite(np.asarray(good["z"], dtype=float))][:20]
    good["mag_g"] = np.asarray(good["mag_g"], dtype=float)
    good["ml_g"] = 2.5
    good["ml_g_err"] = 0.3
    (tmp_path / "fitsbundle").mkdir()
    good.write(tmp_path / "fitsbundle" / "catalogue.fits")
    report = ingest_bundle(tmp_path / "fitsbundle", with_images=False)
    assert report.rejected == 0 and report.accepted + report.excluded == 20
    galaxy = Galaxy.objects.filter(survey__name="fitsbundle").first()
    assert galaxy.ml_g == 2.5 and galaxy.ml_source == "catalogue"
    assert not Image.objects.exists()


def test_image_with_the_wrong_band_header_is_rejected(synthetic_bundle, synthetic_truth, tmp_path):
    from astropy.io import fits

    copy = tmp_path / "bundle"
    shutil.copytree(synthetic_bundle, copy)
    objid = int(next(o for o, f in zip(synthetic_truth["objid"], synthetic_truth["fault"], strict=True) if not f))
    with fits.open(copy / "images" / f"{objid}_g.fits", mode="update") as hdul:
        hdul[0].header["BAND"] = "r"
    report = ingest_bundle(copy, "bands")
    reasons = [r["reason"] for r in report.rejections if r["objid"] == objid]
    assert any("BAND = 'r'" in r for r in reasons)
    assert Galaxy.objects.get(survey__name="bands", objid=objid).status == "rejected"


def test_rejected_positions_are_not_indexed_for_cone_search(tmp_path):
    from catalogue.selectors import galaxies_in_cone

    bundle_dir = tmp_path / "positions"
    bundle_dir.mkdir()
    (bundle_dir / "catalogue.csv").write_text(
        "objid,ra,dec,z,d25_arcmin,mag_g,mag_i,ml_g,ml_g_err\n"
        "1,10.0,0.5,0.05,0.6,15.0,14.0,2.0,0.2\n"
        "2,10.0,95.0,0.05,0.6,15.0,14.0,2.0,0.2\n"  # dec out of range: placeholder dec 0 must not be indexed
        "3,400.0,0.5,0.05,0.6,15.0,14.0,2.0,0.2\n"  # ra out of range
        "4,abc,0.5,0.05,0.6,15.0,14.0,2.0,0.2\n"  # unparseable ra
    )
    report = ingest_bundle(bundle_dir, with_images=False)
    kinds = {r["objid"]: r["kind"] for r in report.rejections}
    assert kinds == {2: "bad_position", 3: "bad_position", 4: "unparseable_number"}  # one reason each
    stored = {g.objid: g for g in Galaxy.objects.filter(survey__name="positions")}
    assert stored[1].healpix is not None
    assert all(stored[o].healpix is None for o in (2, 3, 4))
    assert stored[2].dec is None and stored[2].extra["rejected_values"] == {"dec": 95.0}
    assert list(galaxies_in_cone(10.0, 0.0, 2.0).values_list("objid", flat=True)) == [1]
    assert list(galaxies_in_cone(40.0, 0.5, 1.0)) == []


def test_galaxies_are_written_in_sky_order_whatever_the_files_order(tmp_path):
    """Ids follow the HEALPix index (unplaced rows last), so a cone's rows and their predictions are neighbours."""
    from pipeline.sky import healpix_index

    bundle_dir = tmp_path / "scattered"
    bundle_dir.mkdir()
    rng = np.random.default_rng(4)
    ra, dec = rng.uniform(0, 360, 40), rng.uniform(-60, 60, 40)
    lines = ["objid,ra,dec,z,d25_arcmin,mag_g,mag_i,ml_g,ml_g_err"]
    lines += [f"{k + 1},{float(ra[k])!r},{float(dec[k])!r},0.05,0.6,15.0,14.0,2.0,0.2" for k in range(40)]
    lines.append("41,400.0,0.5,0.05,0.6,15.0,14.0,2.0,0.2")  # no place on the sky: last
    (bundle_dir / "catalogue.csv").write_text("\n".join(lines) + "\n")
    assert list(np.argsort(healpix_index(ra, dec))) != list(range(40))  # the file is not in sky order
    ingest_bundle(bundle_dir, with_images=False)
    by_id = list(Galaxy.objects.filter(survey__name="scattered").order_by("id").values_list("objid", "healpix"))
    assert [o for o, _ in by_id][-1] == 41
    placed = [h for _, h in by_id[:-1]]
    assert placed == sorted(placed) and len(placed) == 40
