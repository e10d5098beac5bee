"""A PNG montage of g-band cutouts, to look at what the simulator (or a survey) produced."""

from __future__ import annotations

import csv
from pathlib import Path

from astropy.io import fits
from PIL import Image, ImageDraw

from pipeline.images.display import asinh_display

THUMB_PX = 128


def _thumbnail(path: Path) -> Image.Image:
    picture = 255 - asinh_display(fits.getdata(path))  # dark galaxy on white, like printed SDSS
    return Image.fromarray(picture).resize((THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS)


def write_montage(bundle_dir: str | Path, out_png: str | Path, columns: int = 8, rows: int = 6) -> Path:
    """Tile the first galaxies' g images with their class label (from truth.csv when present)."""
    bundle = Path(bundle_dir)
    labels: dict[str, str] = {}
    truth = bundle / "truth.csv"
    if truth.exists():
        with open(truth) as fh:
            labels = {row["objid"]: f"{row['class']} i={float(row['inclination_deg']):.0f}" for row in csv.DictReader(fh)}
    files = sorted((bundle / "images").glob("*_g.fits"))[: columns * rows]
    sheet = Image.new("L", (columns * THUMB_PX, rows * (THUMB_PX + 14)), 255)
    draw = ImageDraw.Draw(sheet)
    for k, path in enumerate(files):
        x, y = (k % columns) * THUMB_PX, (k // columns) * (THUMB_PX + 14)
        try:
            sheet.paste(_thumbnail(path), (x, y))
        except (OSError, ValueError):
            draw.text((x + 4, y + 50), "unreadable", fill=0)
        draw.text((x + 2, y + THUMB_PX + 1), labels.get(path.name.split("_")[0], path.name.split("_")[0])[:22], fill=0)
    out = Path(out_png)
    sheet.save(out)
    return out
