"""Synthetic survey speed and realism: render N galaxies, then report the paper's statistics.

Prints JSON with galaxies per second and the realism targets of the simulator issue
(median z, pixel size in kpc, M/L range and median, median automatic scaling value after
star removal; paper: 0.05, 0.44 kpc, 0.09-16.6 / 2.7, 78).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.images.preprocess import ImageMeta, NoScalingValue, preprocess_cutout  # noqa: E402
from pipeline.images.stars import prior_pixels  # noqa: E402
from pipeline.simulate.survey import simulate_survey  # noqa: E402


def median_scaling_value(bundle: Path) -> tuple[float, int, int]:
    stars = Table.read(bundle / "stars.csv", format="ascii.csv")
    radec = np.column_stack([stars["ra"], stars["dec"]]) if len(stars) else np.empty((0, 2))
    values, failures = [], 0
    for path in sorted((bundle / "images").glob("*_g.fits")):
        with fits.open(path) as hdul:
            header, image = hdul[0].header, hdul[0].data.astype(float)
        try:
            result = preprocess_cutout(
                image,
                header["PSF_FWHM"] / header["PIXSCALE"],
                ImageMeta(0.05, 220.0, 0.4),
                prior_xy=prior_pixels(header, radec),
            )
            values.append(result.scaling_value)
        except NoScalingValue:
            failures += 1
    return float(np.median(values)), len(values), failures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", help="keep the bundle here (default: a temporary directory)")
    parser.add_argument("--montage", help="also write a montage PNG here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or Path(tmp) / "bundle")
        start = time.perf_counter()
        summary = simulate_survey(out, n=args.n, seed=args.seed, workers=args.workers)
        seconds = time.perf_counter() - start
        if args.montage:
            from pipeline.simulate.montage import write_montage

            write_montage(out, args.montage)
        median_a, n_scaled, failures = median_scaling_value(out)
    print(
        json.dumps(
            {
                "benchmark": "simulate",
                "n": args.n,
                "workers": args.workers,
                "seconds": round(seconds, 1),
                "galaxies_per_second": round(args.n / seconds, 2),
                **{k: round(v, 4) for k, v in summary.stats.items()},
                "median_scaling_value": round(median_a, 1),
                "scaling_value_failures": failures,
                "scaled": n_scaled,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
