"""Inputs you can trust: no file stops an ingest, nothing is half-written, star removal
leaves the galaxy as if no star had been there, and the noise level does not depend on
an iteration cap."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command

from catalogue.models import Galaxy, Image, Preprocessed, Survey
from catalogue.orchestration.stage import start_stage
from catalogue.services import ingest as ingest_service
from catalogue.services.image_store import load_log_images
from catalogue.services.ingest import ingest_bundle
from pipeline.bundles.sample import ASSUMED_MAGERR_G
from pipeline.images import preprocess as pp
from pipeline.simulate.starcheck import compare_star_removal, ratio_table

pytestmark = pytest.mark.django_db


def good_objids(truth, n: int) -> list[int]:
    return [int(o) for o, f in zip(truth["objid"], truth["fault"], strict=True) if not f][:n]


def edit_header(bundle, objid: int, **cards) -> None:
    with fits.open(bundle / "images" / f"{objid}_g.fits", mode="update") as hdul:
        for key, value in cards.items():
            hdul[0].header[key] = value


@pytest.fixture
def faulty(synthetic_bundle, synthetic_truth, tmp_path):
    """A copy of the synthetic bundle with one more fault of each header kind, a non-square
    cutout and a missing g magnitude error; returns (path, {fault: objid})."""
    copy = tmp_path / "faulty"
    shutil.copytree(synthetic_bundle, copy)
    ids = good_objids(synthetic_truth, 9)
    faults = dict(
        zip(["pixscale_text", "psf_negative", "bunit_counts", "cube", "off_centre", "non_square", "no_magerr"], ids, strict=False)
    )
    edit_header(copy, faults["pixscale_text"], PIXSCALE="0.396arcsec")
    edit_header(copy, faults["psf_negative"], PSF_FWHM=-1.4)
    edit_header(copy, faults["bunit_counts"], BUNIT="counts")
    path = copy / "images" / f"{faults['cube']}_g.fits"
    header = fits.getheader(path)
    fits.PrimaryHDU(np.stack([fits.getdata(path)] * 2), header=header).writeto(path, overwrite=True)
    edit_header(copy, faults["off_centre"], CRVAL1=fits.getheader(path)["CRVAL1"] + 0.05)
    path = copy / "images" / f"{faults['non_square']}_g.fits"
    data, header = fits.getdata(path), fits.getheader(path)
    fits.PrimaryHDU(data[:, 6:-6], header=header).writeto(path, overwrite=True)  # 12 px narrower, same centre
    table = Table.read(copy / "catalogue.csv", format="ascii.csv")
    table["magerr_g"] = table["magerr_g"].astype(object)
    table["magerr_g"][np.asarray(table["objid"]).astype(str) == str(faults["no_magerr"])] = ""
    table.write(copy / "catalogue.csv", format="ascii.csv", overwrite=True)
    return copy, faults


def test_every_header_fault_is_a_rejection_by_objid_and_reason(faulty, synthetic_truth):
    bundle, faults = faulty
    truth = synthetic_truth
    report = ingest_bundle(bundle, "faulty")
    reasons = {r["objid"]: r["reason"] for r in report.rejections}
    assert "PIXSCALE = '0.396arcsec', which is not a number" in reasons[faults["pixscale_text"]]
    assert "PSF_FWHM = -1.4" in reasons[faults["psf_negative"]]
    assert "BUNIT = 'counts'" in reasons[faults["bunit_counts"]]
    assert "no 2-D image" in reasons[faults["cube"]]
    assert "arcsec from the catalogue position" in reasons[faults["off_centre"]]
    for kind in ("pixscale_text", "psf_negative", "bunit_counts", "cube", "off_centre"):
        assert Galaxy.objects.get(objid=faults[kind]).status == "rejected"
    # Every galaxy without a fault is in, the non-square cutout too, at its real shape.
    bad = {faults[k] for k in ("pixscale_text", "psf_negative", "bunit_counts", "cube", "off_centre")}
    good = [int(o) for o, f in zip(truth["objid"], truth["fault"], strict=True) if not f and int(o) not in bad]
    assert not Galaxy.objects.filter(survey__name="faulty", objid__in=good, status="rejected").exists()
    assert Galaxy.objects.filter(survey__name="faulty", objid__in=good).count() == len(good)
    square = Image.objects.get(galaxy__objid=faults["non_square"], band="g")
    assert (square.width, square.height) == (square.height - 12, square.height)
    assert Galaxy.objects.get(objid=faults["non_square"]).status != "rejected"


def test_a_missing_magnitude_error_never_shrinks_the_target_error(faulty):
    bundle, faults = faulty
    ingest_bundle(bundle, "faulty")
    galaxy = Galaxy.objects.get(objid=faults["no_magerr"])
    assert galaxy.magerr_g is None and galaxy.ml_source == "gswlc"
    assert galaxy.extra["assumed"] == {"magerr_g": ASSUMED_MAGERR_G}
    gswlc = Table.read(bundle / "gswlc.dat", format="ascii.no_header")
    log_err = float(gswlc[gswlc.columns[0] == galaxy.objid][0][10])
    # sqrt((ln10 sigma_logM)^2 + (0.4 ln10 x 0.05)^2), larger than the mass term alone.
    expected = np.hypot(np.log(10) * log_err, 0.4 * np.log(10) * 0.05)
    assert galaxy.ml_g_err / galaxy.ml_g == pytest.approx(expected, rel=1e-6)
    assert galaxy.ml_g_err / galaxy.ml_g > np.log(10) * log_err


def test_a_non_square_cutout_is_cropped_not_stretched(faulty):
    bundle, faults = faulty
    ingest_bundle(bundle, "faulty")
    survey = Survey.objects.get(name="faulty")
    start_stage("preprocess", survey, resolutions=[48], preset_name="test")
    galaxy = Galaxy.objects.get(objid=faults["non_square"])
    assert galaxy.preprocessed.status == "ok"
    image = load_log_images([galaxy], 48)[0]
    assert image.shape == (48, 48)
    # The galaxy stays at the centre: its light-weighted centroid is within a pixel of it.
    y, x = np.indices(image.shape)
    weights = np.clip(image - np.median(image), 0, None)
    assert abs((weights * x).sum() / weights.sum() - 23.5) < 1.5
    assert abs((weights * y).sum() / weights.sum() - 23.5) < 1.5
    assert galaxy.preprocessed.features["image_size"] == Image.objects.get(galaxy=galaxy, band="g").width


def test_a_galaxy_that_cannot_be_preprocessed_leaves_the_learning_sample(synthetic_bundle, synthetic_truth):
    ingest_bundle(synthetic_bundle, "sample")
    blank = int(next(o for o, f in zip(synthetic_truth["objid"], synthetic_truth["fault"], strict=True) if f == "blank_image"))
    before = Galaxy.objects.get(objid=blank)
    assert before.status == "ok" and before.split  # ingest cannot tell: the file is valid
    start_stage("preprocess", Survey.objects.get(name="sample"), resolutions=[32], preset_name="test")
    after = Galaxy.objects.get(objid=blank)
    assert after.status == "excluded" and after.split == ""
    assert after.status_reason.startswith("preprocessing failed: ValueError: image is constant")
    assert Preprocessed.objects.get(galaxy=after).status == "failed"
    assert not Galaxy.objects.filter(status="ok", preprocessed__status="failed").exists()


def test_an_unexpected_error_on_one_file_becomes_its_rejection(synthetic_bundle, synthetic_truth, monkeypatch):
    victim = good_objids(synthetic_truth, 1)[0]
    real = ingest_service.bundle.inspect_image

    def flaky(path, *args):
        if path.name == f"{victim}_g.fits":
            raise MemoryError("simulated: the decoder ran out of memory")
        return real(path, *args)

    monkeypatch.setattr(ingest_service.bundle, "inspect_image", flaky)
    report = ingest_bundle(synthetic_bundle, "flaky")
    reasons = [r["reason"] for r in report.rejections if r["objid"] == victim]
    assert reasons == [f"{victim}_g.fits could not be inspected (MemoryError: simulated: the decoder ran out of memory)"]
    assert report.accepted > 150


def test_image_files_of_an_ingest_that_rolls_back_are_removed(synthetic_bundle, monkeypatch):
    def broken(*_args):
        raise RuntimeError("database went away while storing GZ2 votes")

    monkeypatch.setattr(ingest_service, "_store_gz2", broken)
    with pytest.raises(RuntimeError, match="went away"):
        ingest_bundle(synthetic_bundle, "rollback")
    assert not Galaxy.objects.filter(survey__name="rollback").exists()
    folder = "surveys/rollback/images"
    assert not default_storage.exists(folder) or default_storage.listdir(folder) == ([], [])


def test_bundles_with_nothing_usable_exit_non_zero_naming_why(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "catalogue.csv").write_text("objid,ra,dec,z,d25_arcmin,mag_g,mag_i\n")
    with pytest.raises(CommandError, match="no rows"):
        call_command("ingest_survey", str(empty))
    hopeless = tmp_path / "hopeless"
    hopeless.mkdir()
    (hopeless / "catalogue.csv").write_text(
        "objid,ra,dec,z,d25_arcmin,mag_g,mag_i\n1,10,1,-0.1,1.0,15,14\n2,10,1,0.05,1.0,15,14\n"
    )
    with pytest.raises(CommandError, match=r"no usable galaxy.*negative_redshift: 1.*missing_image: 1"):
        call_command("ingest_survey", str(hopeless))
    assert not Survey.objects.exists()


@pytest.mark.parametrize("where", ["missing-folder/r.json", "is-a-file.txt/r.json", "."])
def test_an_unwritable_report_path_is_refused_before_anything_is_ingested(synthetic_bundle, tmp_path, where):
    (tmp_path / "is-a-file.txt").write_text("x")
    with pytest.raises(CommandError, match="--report"):
        call_command("ingest_survey", str(synthetic_bundle), "--name", "r", "--report", str(tmp_path / where))
    assert not Survey.objects.exists()


def test_star_removal_leaves_the_galaxy_as_if_no_star_had_been_there(synthetic_bundle):
    for prior in (True, False):
        comparison = compare_star_removal(synthetic_bundle, prior=prior)
        table = {row["n_stars"]: row for row in ratio_table(comparison)}
        assert set(table) == {1, 2, 3, 4}, table
        for n_stars, row in table.items():
            assert 0.9 <= row["median_a_ratio"] <= 1.1, (prior, n_stars, row)
            assert row["median_log_residual"] < 0.03, (prior, n_stars, row)
            assert 0.8 <= row["median_filled_std_ratio"] <= 1.2, (prior, n_stars, row)


def test_noise_level_is_clipped_to_convergence_not_to_an_iteration_cap():
    # A galaxy filling the frame: early clipping rounds still hold its outskirts.
    yy, xx = np.indices((128, 128))
    r = np.hypot(xx - 63.5, yy - 63.5)
    image = 40 * np.exp(-r / 18.0) + np.random.default_rng(3).normal(0, 0.05, r.shape)
    unit = pp.rescale_to_unit(image)
    converged = pp.level(pp.noise_sample(unit))
    assert converged == pytest.approx(pp.level(pp.noise_sample(unit, maxiters=1000)), rel=1e-12)
    capped = pp.level(pp.noise_sample(unit, maxiters=5))
    assert capped > 1.1 * converged  # stopping early counts galaxy light as noise
