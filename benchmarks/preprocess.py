"""Preprocessing throughput and star-removal quality.

Throughput: galaxies per second per core at 128 and 256 px on synthetic SDSS-like cutouts
(GalSim disk + bulge + noise, one star), so the star finder has real work.
Quality, on a simulated faulted bundle (``--bundle DIR`` to use one already made): stars
found and false detections, blind and with the catalogue prior, and the table of scaling
values after removal over star-free ones per number of stars. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import galsim
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.images.colour import colour_channels  # noqa: E402
from pipeline.images.preprocess import ImageMeta, preprocess, preprocess_cutout, remove_stars  # noqa: E402

PIXSCALE, FWHM = 0.396, 1.4


def cutout(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hlr = size * PIXSCALE / 10
    gal = galsim.Exponential(half_light_radius=hlr, flux=400) + galsim.DeVaucouleurs(half_light_radius=hlr / 4, flux=150)
    psf = galsim.Moffat(beta=3.5, fwhm=FWHM)
    image = galsim.Convolve(gal, psf).drawImage(nx=size, ny=size, scale=PIXSCALE).array
    star = psf.withFlux(60).drawImage(nx=size, ny=size, scale=PIXSCALE, offset=(size * 0.3, -size * 0.25)).array
    return (image + star + rng.normal(0, 0.011, image.shape)).astype(np.float64)


def time_per_image(fn, images, repeat: int) -> float:
    fn(images[0])
    start = time.perf_counter()
    for _ in range(repeat):
        for image in images:
            fn(image)
    return (time.perf_counter() - start) / (repeat * len(images))


def with_i_band(image: np.ndarray, meta: ImageMeta, sizes: tuple[int, ...]) -> None:
    """The g chain and the i channels, the i cutout standing in as the g one 1.5 times brighter."""
    removal = remove_stars(image, FWHM / PIXSCALE)
    preprocess(removal.cleaned, meta, sizes, n_stars_removed=len(removal.stars))
    colour_channels(removal, image * 1.5, FWHM / PIXSCALE, sizes)


def star_removal_quality(bundle: Path | None, n: int) -> dict:
    from pipeline.simulate.starcheck import compare_star_removal, detection_counts, ratio_table
    from pipeline.simulate.survey import simulate_survey

    if bundle is None:
        bundle = Path(tempfile.mkdtemp(prefix="morphomass-stars-")) / "bundle"
        simulate_survey(bundle, n=n, seed=3, workers=2, with_faults=True)
    out = {"bundle": str(bundle)}
    for prior in (False, True):
        key = "prior" if prior else "blind"
        out[f"detection_{key}"] = detection_counts(bundle, prior=prior)
        out[f"scaling_ratio_by_n_stars_{key}"] = ratio_table(compare_star_removal(bundle, prior=prior))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="preprocessing throughput and star-removal quality")
    parser.add_argument("--bundle", type=Path, help="a simulated bundle (with its .starfree folder beside it)")
    parser.add_argument("--n", type=int, default=600, help="galaxies to simulate when no --bundle is given")
    args = parser.parse_args()
    meta = ImageMeta(redshift=0.05, lum_dist_mpc=222.0, pixel_kpc=0.4)
    results = {}
    for size in (128, 256):
        images = [cutout(size, seed) for seed in range(8)]
        plain = time_per_image(lambda im: preprocess(im, meta), images, 25)
        resized = time_per_image(lambda im: preprocess(im, meta, (69, 128, 197)), images, 10)
        stars = time_per_image(lambda im: preprocess_cutout(im, FWHM / PIXSCALE, meta, (69, 128, 197)), images, 5)
        # The i image and g - i map beside the g one (image_bands g, i): the g chain, then the i one.
        with_i = time_per_image(lambda im: with_i_band(im, meta, (69, 128, 197)), images, 5)
        results[f"{size}px"] = {
            "ms_per_image_no_star_removal": round(plain * 1e3, 3),
            "ms_per_image_with_3_resizes": round(resized * 1e3, 3),
            "ms_per_image_with_star_removal_and_resizes": round(stars * 1e3, 3),
            "galaxies_per_second_per_core_no_star_removal": round(1 / plain, 1),
            "galaxies_per_second_per_core_full": round(1 / stars, 1),
            "ms_per_image_full_with_i_and_colour_map": round(with_i * 1e3, 3),
        }
    quality = star_removal_quality(args.bundle, args.n)
    print(json.dumps({"benchmark": "preprocess", "single_core": True, "results": results, "star_removal": quality}, indent=2))


if __name__ == "__main__":
    main()
