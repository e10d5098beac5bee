"""Preprocessing throughput: galaxies per second per core at 128 and 256 px.

Images are synthetic SDSS-like cutouts (GalSim disk + bulge + noise, one star), so the
star finder has real work. Prints JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import galsim
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.preprocess import ImageMeta, preprocess, preprocess_cutout  # noqa: E402

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


def main() -> None:
    meta = ImageMeta(redshift=0.05, lum_dist_mpc=222.0, pixel_kpc=0.4)
    results = {}
    for size in (128, 256):
        images = [cutout(size, seed) for seed in range(8)]
        plain = time_per_image(lambda im: preprocess(im, meta), images, 25)
        resized = time_per_image(lambda im: preprocess(im, meta, (69, 128, 197)), images, 10)
        stars = time_per_image(lambda im: preprocess_cutout(im, FWHM / PIXSCALE, meta, (69, 128, 197)), images, 5)
        results[f"{size}px"] = {
            "ms_per_image_no_star_removal": round(plain * 1e3, 3),
            "ms_per_image_with_3_resizes": round(resized * 1e3, 3),
            "ms_per_image_with_star_removal_and_resizes": round(stars * 1e3, 3),
            "galaxies_per_second_per_core_no_star_removal": round(1 / plain, 1),
            "galaxies_per_second_per_core_full": round(1 / stars, 1),
        }
    print(json.dumps({"benchmark": "preprocess", "single_core": True, "results": results}, indent=2))


if __name__ == "__main__":
    main()
