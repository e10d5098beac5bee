"""A galaxy's pictures as the pages show them: the cutout, the star removal, the network inputs, the g - i map.

Each is made by the code the stages run (the stage's own star removal on the cutout the
stage reads, the stored log images), only stretched for display, so a picture shows what the
pipeline did.
"""

from __future__ import annotations

import numpy as np

from catalogue.models import Galaxy, ImageStore
from catalogue.services.cutouts import cutout_for_preprocessing, read_cutout, usable_image
from catalogue.services.image_store import load_log_images, stored_resolutions
from pipeline.images.display import asinh_display, linear_display, mark_points, png_bytes
from pipeline.images.preprocess import central_square, remove_stars

#: Pixels across a page's picture.
PICTURE_PX = 256


def galaxy_png(galaxy: Galaxy, stage: str) -> bytes:
    """The PNG of a galaxy at one stage: ``g`` (the cutout), ``clean`` (stars removed, circled in red)
    or ``log<res>`` (a network's input).

    Raises
    ------
    LookupError
        when the galaxy has no such picture (the message says why).
    """
    if stage == "g":
        image = usable_image(galaxy)
        if image is None:
            raise LookupError("no usable g image")
        _, data = read_cutout(image)
        return png_bytes(asinh_display(central_square(data)[0]), size=PICTURE_PX)
    if stage == "clean":
        return star_removal_png(galaxy)
    if stage.startswith("log") and stage[3:].isdigit():
        if int(stage[3:]) not in stored_resolutions(galaxy):
            raise LookupError("not preprocessed at that resolution")
        return png_bytes(linear_display(load_log_images([galaxy], int(stage[3:]))[0]), size=PICTURE_PX)
    raise LookupError(f"unknown stage {stage!r}")


def star_removal_png(galaxy: Galaxy) -> bytes:
    """The cutout after the stage's own star removal, same stretch as the raw one, removed stars circled in red.

    Raises
    ------
    LookupError
        when the galaxy has no usable g image.
    """
    try:
        cutout = cutout_for_preprocessing(galaxy)
    except ValueError as exc:
        raise LookupError(str(exc)) from exc
    removal = remove_stars(cutout.data, cutout.psf_fwhm_px, cutout.prior_xy, cutout.seed)
    picture = asinh_display(removal.cleaned, reference=removal.square)
    stars = [(s.x, s.y) for s in removal.stars]
    return png_bytes(mark_points(picture, stars, radius=2.5 * cutout.psf_fwhm_px), size=PICTURE_PX)


def colour_map(galaxy: Galaxy) -> np.ndarray | None:
    """The galaxy's g - i map (mag) at the largest resolution it was stored at, or None when it has none."""
    pre = getattr(galaxy, "preprocessed", None)
    if pre is None or pre.i_band != "ok":
        return None
    for resolution in sorted(stored_resolutions(galaxy), reverse=True):
        try:
            return load_log_images([galaxy], resolution, channel=ImageStore.Channel.COLOUR)[0]
        except LookupError:
            continue
    return None


def upload_pngs(prepared) -> list[tuple[str, bytes]]:
    """(caption, PNG) of an uploaded galaxy: the raw cutout, stars removed (circled), the log-scaled network input."""
    removal, log_image = prepared.removal, prepared.preprocessed.log_image
    stars = [(star.x, star.y) for star in removal.stars]
    radius = 2.5 * max(1.0, removal.square.shape[0] / 128)
    pictures = [
        ("raw cutout (central square)", asinh_display(removal.square)),
        (
            f"stars removed ({len(stars)}, circled)",
            mark_points(asinh_display(removal.cleaned, reference=removal.square), stars, radius),
        ),
        (f"log-scaled, a = {prepared.preprocessed.scaling_value:.3g}", linear_display(log_image)),
    ]
    return [(caption, png_bytes(picture, size=PICTURE_PX)) for caption, picture in pictures]
