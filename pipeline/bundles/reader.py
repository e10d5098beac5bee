"""Readers and validators for the survey bundle (docs/bundles.md).

Bad input never stops a bundle: each bad row or file becomes a :class:`Rejection` with
the galaxy's objid and a reason, and the rest goes on. Only a bundle that is unusable as a
whole (no catalogue, required columns missing) raises :class:`BundleError`.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning

from pipeline import gz2

#: mag_i and the other bands are optional: a g-only survey is predicted by the g models.
REQUIRED_COLUMNS = ("objid", "ra", "dec", "z", "d25_arcmin", "mag_g")
#: A user's own sample (a prediction job) needs only what predicting reads: position and size are
#: optional there, since nothing in preprocessing or the models uses them.
SAMPLE_REQUIRED_COLUMNS = ("objid", "z", "mag_g")
FLOAT_COLUMNS = (
    "ra",
    "dec",
    "z",
    "d25_arcmin",
    *(f"mag_{b}" for b in "ugriz"),
    *(f"magerr_{b}" for b in "ugriz"),
    "ml_g",
    "ml_g_err",
    "chi2_r",
)
GSWLC_COLUMNS = (
    "objid",
    "glxid",
    "plate",
    "mjd",
    "fiber_id",
    "ra",
    "dec",
    "z",
    "chi2_r",
    "log_mstar",
    "log_mstar_err",
    "log_sfr_sed",
    "log_sfr_sed_err",
    "a_fuv",
    "a_fuv_err",
    "a_b",
    "a_b_err",
    "a_v",
    "a_v_err",
    "flag_sed",
    "uv_survey",
    "flag_uv",
    "flag_midir",
    "flag_mgs",
)
GSWLC_MISSING = -99.0
IMAGE_HEADER_KEYS = ("BUNIT", "PIXSCALE", "PSF_FWHM", "BAND")
MIN_FINITE_FRACTION = 0.5
MIN_IMAGE_PX = 16
#: Accepted spellings of BUNIT (lower case): SDSS-calibrated flux per pixel.
FLUX_UNITS = frozenset({"nanomaggy", "nanomaggies", "nmgy"})
MAX_PIXSCALE_ARCSEC = 10.0
MAX_PSF_FWHM_ARCSEC = 10.0
#: The WCS centre of a cutout may sit this far from the catalogue position ...
CENTRE_TOLERANCE_ARCSEC = 3.0
#: ... or this fraction of the field width, whichever is larger.
CENTRE_TOLERANCE_FRACTION = 0.05


class BundleError(ValueError):
    """The bundle cannot be ingested at all (the message names the problem)."""


@dataclass
class Rejection:
    """One bad row or file: which galaxy, where, and why."""

    kind: str
    reason: str
    objid: int | None = None
    row: int | None = None  # 1-based data row in the file, header excluded
    file: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class CatalogueRows:
    """Parsed catalogue: numeric columns as float arrays (NaN when missing) plus bookkeeping."""

    objid: np.ndarray  # int64; rows with an unusable objid are already removed
    row: np.ndarray  # 1-based row number in the file
    values: dict[str, np.ndarray]
    extra: list[dict]
    rejected: np.ndarray  # bool per kept row
    reasons: list[list[str]]  # per kept row
    kinds: list[list[str]]
    rejections: list[Rejection] = field(default_factory=list)  # rows that never got a galaxy row

    def __len__(self) -> int:
        return len(self.objid)

    def reject(self, index: int, kind: str, reason: str) -> None:
        self.rejected[index] = True
        self.kinds[index].append(kind)
        self.reasons[index].append(reason)


def _to_float(column) -> tuple[np.ndarray, np.ndarray]:
    """Column -> (float array with NaN for missing, bool array of unparseable entries)."""
    if column.dtype.kind in "fiu":
        data = np.ma.filled(np.ma.asarray(column, dtype=float), np.nan)
        return data, np.zeros(len(data), bool)
    values = np.full(len(column), np.nan)
    bad = np.zeros(len(column), bool)
    mask = np.ma.getmaskarray(column)
    for i, (text, masked) in enumerate(zip(column.tolist(), mask, strict=True)):
        if masked or text is None or str(text).strip() == "":
            continue
        try:
            values[i] = float(text)
        except ValueError:
            bad[i] = True
    return values, bad


#: The names a bundle's catalogue may have, in the order they are looked for.
CATALOGUE_NAMES = ("catalogue.csv", "catalogue.fits", "catalogue.vot", "catalogue.xml")
#: File name endings read as VOTable (a user's sample may come as one).
VOTABLE_SUFFIXES = frozenset({".xml", ".vot", ".votable"})


def read_table(path: Path) -> Table:
    """Read a CSV, FITS or VOTable table; numbers that fail to parse stay as text for per-row checks."""
    try:
        if path.suffix.lower() in {".fits", ".fit"}:
            return Table.read(path, hdu=1)
        if path.suffix.lower() in VOTABLE_SUFFIXES:
            return Table.read(path, format="votable")
        return Table.read(path, format="ascii.csv", fast_reader=True)
    except Exception as exc:  # astropy raises many types for a broken file
        raise BundleError(f"{path.name} cannot be read as a table: {exc}") from exc


def parse_catalogue(table: Table, file: str = "catalogue.csv", required: tuple[str, ...] = REQUIRED_COLUMNS) -> CatalogueRows:
    """Validate catalogue rows: types, ranges, duplicates. Returns rows and rejections.

    ``required`` columns must be present (and a value on each row); a position or a D25 outside
    ``required`` is checked only where a row gives one.
    """
    missing = [c for c in required if c not in table.colnames]
    if missing:
        raise BundleError(f"{file} lacks required column(s) {', '.join(missing)}; it has {', '.join(table.colnames)}")
    n = len(table)
    rows = np.arange(1, n + 1)
    if table["objid"].dtype.kind in "iu":
        objid = np.ma.filled(np.ma.asarray(table["objid"]), -1).astype(np.int64)
        objid_ok = ~np.ma.getmaskarray(table["objid"])
    else:
        # Parse text ids exactly as integers (float would lose digits of 19-digit SDSS ids).
        objid = np.full(n, -1, dtype=np.int64)
        objid_ok = np.zeros(n, bool)
        for i, text in enumerate(np.ma.filled(np.ma.asarray(table["objid"]).astype(str), "").tolist()):
            try:
                objid[i] = int(str(text).strip())
                objid_ok[i] = True
            except ValueError:
                pass
    early: list[Rejection] = []
    for i in np.flatnonzero(~objid_ok):
        early.append(Rejection("bad_objid", f"objid {str(table['objid'][i])!r} is not an integer", None, int(rows[i]), file))
    seen: dict[int, int] = {}
    keep = objid_ok.copy()
    for i in np.flatnonzero(objid_ok):
        first = seen.setdefault(int(objid[i]), int(rows[i]))
        if first != rows[i]:
            keep[i] = False
            early.append(Rejection("duplicate_objid", f"objid also on row {first}", int(objid[i]), int(rows[i]), file))

    values: dict[str, np.ndarray] = {}
    unparseable: dict[str, np.ndarray] = {}
    for name in FLOAT_COLUMNS:
        if name in table.colnames:
            values[name], unparseable[name] = _to_float(table[name])
        else:
            values[name], unparseable[name] = np.full(n, np.nan), np.zeros(n, bool)
    extra_names = [c for c in table.colnames if c not in FLOAT_COLUMNS and c != "objid"]
    extra_cols = {c: table[c].tolist() for c in extra_names}

    idx = np.flatnonzero(keep)
    parsed = CatalogueRows(
        objid=objid[idx],
        row=rows[idx],
        values={k: v[idx] for k, v in values.items()},
        extra=[{c: _json_value(extra_cols[c][i]) for c in extra_names} for i in idx],
        rejected=np.zeros(len(idx), bool),
        reasons=[[] for _ in idx],
        kinds=[[] for _ in idx],
        rejections=early,
    )
    for name, bad in unparseable.items():
        raw = table[name] if name in table.colnames else None
        for j in np.flatnonzero(bad[idx]):
            parsed.reject(j, "unparseable_number", f"{name} = {str(raw[idx[j]])!r} is not a number")
    v = parsed.values
    position_needed = "ra" in required or "dec" in required
    d25_needed = "d25_arcmin" in required
    checks = [
        ("missing_redshift", np.isnan(v["z"]) & ~unparseable["z"][idx], lambda _j: "no redshift"),
        ("negative_redshift", v["z"] < 0, lambda j: f"negative redshift z = {v['z'][j]:g}"),
        (
            "missing_position",
            ((np.isnan(v["ra"]) & ~unparseable["ra"][idx]) | (np.isnan(v["dec"]) & ~unparseable["dec"][idx]))
            & (position_needed | (np.isnan(v["ra"]) != np.isnan(v["dec"]))),
            lambda _j: "no ra/dec",
        ),
        (
            "bad_position",
            (np.abs(v["dec"]) > 90) | (v["ra"] < 0) | (v["ra"] >= 360),
            lambda j: f"position out of range: ra = {v['ra'][j]:g}, dec = {v['dec'][j]:g}",
        ),
        ("missing_magnitude", np.isnan(v["mag_g"]) & ~unparseable["mag_g"][idx], lambda _j: "no mag_g"),
        (
            "bad_d25",
            ~(v["d25_arcmin"] > 0) & ~unparseable["d25_arcmin"][idx] & (d25_needed | ~np.isnan(v["d25_arcmin"])),
            lambda j: f"D25 must be positive, got {v['d25_arcmin'][j]:g} arcmin",
        ),
        ("nonpositive_error", v["ml_g_err"] <= 0, lambda j: f"ml_g_err must be positive, got {v['ml_g_err'][j]:g}"),
        ("nonpositive_target", v["ml_g"] <= 0, lambda j: f"ml_g must be positive, got {v['ml_g'][j]:g}"),
    ]
    for band in "ugriz":
        err = v[f"magerr_{band}"]
        checks.append(("nonpositive_error", err <= 0, lambda j, b=band, e=err: f"magerr_{b} must be positive, got {e[j]:g}"))
    for kind, bad, message in checks:
        with np.errstate(invalid="ignore"):
            hits = np.flatnonzero(bad)
        for j in hits:
            parsed.reject(j, kind, message(j))
    return parsed


def _json_value(value):
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, bytes):
        return value.decode()
    return value


def read_gswlc(path: Path) -> Table:
    """Read GSWLC-2: 24 whitespace-separated columns, -99 for missing (-> masked)."""
    try:
        table = Table.read(path, format="ascii.no_header", names=GSWLC_COLUMNS, guess=False)
    except Exception as exc:
        raise BundleError(f"{path.name} is not a 24-column GSWLC-2 table: {exc}") from exc
    for name in table.colnames:
        if table[name].dtype.kind == "f":
            table[name] = np.ma.masked_equal(np.ma.asarray(table[name]), GSWLC_MISSING)
    return table


def read_gz2(path: Path) -> tuple[np.ndarray, np.ndarray, list[Rejection]]:
    """Read GZ2 weighted fractions -> (objid, (N, 37) fractions, rejections of bad rows)."""
    table = read_table(path)
    id_column = "dr8objid" if "dr8objid" in table.colnames else "objid" if "objid" in table.colnames else None
    if id_column is None:
        raise BundleError(f"{path.name} has neither a dr8objid nor an objid column")
    missing = [c for c in gz2.WEIGHTED_FRACTION_COLUMNS if c not in table.colnames]
    if missing:
        raise BundleError(f"{path.name} lacks {len(missing)} GZ2 column(s), e.g. {missing[0]}")
    fractions = np.column_stack([_to_float(table[c])[0] for c in gz2.WEIGHTED_FRACTION_COLUMNS])
    objid = np.ma.filled(np.ma.asarray(table[id_column]), -1).astype(np.int64)
    rejections = []
    first_task = fractions[:, gz2.TASK_SLICES["t01"]]
    with np.errstate(invalid="ignore"):
        bad = np.isnan(first_task).any(axis=1) | (fractions < 0).any(axis=1) | (fractions > 1).any(axis=1)
    for i in np.flatnonzero(bad):
        reason = "GZ2 fractions missing for t01 or outside [0, 1]"
        rejections.append(Rejection("bad_gz2", reason, int(objid[i]), i + 1, path.name))
    return objid[~bad], fractions[~bad], rejections


def read_stars(path: Path) -> Table:
    """Read the point-source prior (ra, dec, mag_g)."""
    table = read_table(path)
    missing = [c for c in ("ra", "dec", "mag_g") if c not in table.colnames]
    if missing:
        raise BundleError(f"{path.name} lacks column(s) {', '.join(missing)}")
    return table


@dataclass
class ImageInfo:
    """What ingest records about a valid FITS cutout."""

    height: int
    width: int
    pixscale_arcsec: float
    psf_fwhm_arcsec: float
    band: str
    checksum: str


class BadImage(ValueError):
    """A FITS cutout that cannot be used; the message says why."""


def _header_number(header, key: str, name: str, low: float, high: float) -> float:
    """A header value as a float within (low, high]; BadImage naming the value otherwise."""
    raw = header[key]
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise BadImage(f"{name} has {key} = {raw!r}, which is not a number") from None
    if not (np.isfinite(value) and low < value <= high):
        raise BadImage(f"{name} has {key} = {value:g}; expected a number in ({low:g}, {high:g}] arcsec")
    return value


def _wcs_centre_offset_arcsec(wcs: WCS, shape: tuple[int, int], ra: float, dec: float) -> float:
    """Arcsec from the cutout's WCS centre to (ra, dec) in deg: astropy's angular separation on plain
    radians (a SkyCoord per image cost more than reading the image); the WCS's celestial part is taken
    apart only when it has other axes."""
    from astropy.coordinates import angular_separation

    celestial = wcs if wcs.naxis == 2 else wcs.celestial
    centre_ra, centre_dec = celestial.pixel_to_world_values((shape[1] - 1) / 2, (shape[0] - 1) / 2)
    separation = angular_separation(*np.deg2rad([float(centre_ra), float(centre_dec), ra, dec]))
    return float(np.rad2deg(separation) * 3600.0)


def inspect_image(path: Path, ra: float | None = None, dec: float | None = None) -> ImageInfo:
    """Check a cutout against the bundle format and return its metadata.

    With the catalogue position (``ra``, ``dec`` in deg) the WCS centre of the cutout
    must lie within :data:`CENTRE_TOLERANCE_ARCSEC`, or :data:`CENTRE_TOLERANCE_FRACTION`
    of the field width if that is larger, of it. Non-square cutouts are accepted:
    preprocessing uses their central square, so nothing is stretched.

    Raises
    ------
    BadImage
        missing or unreadable file, not 2-D, too few finite pixels, header keys missing
        or out of range (PIXSCALE and PSF_FWHM positive numbers of arcsec, BUNIT
        nanomaggy), no celestial WCS, or a WCS centre away from the catalogue position.
    """
    if not path.exists():
        raise BadImage(f"{path.name} is missing")
    raw = path.read_bytes()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            with fits.open(path, memmap=False) as hdul:
                header = hdul[0].header
                data = hdul[0].data
                wcs = WCS(header)
    except Exception as exc:
        raise BadImage(f"{path.name} is not a readable FITS file ({type(exc).__name__}: {exc})") from exc
    if data is None or data.ndim != 2:
        raise BadImage(f"{path.name} has no 2-D image in the primary HDU (shape {None if data is None else data.shape})")
    if min(data.shape) < MIN_IMAGE_PX:
        raise BadImage(f"{path.name} is {data.shape[1]} x {data.shape[0]} pixels; at least {MIN_IMAGE_PX} on a side needed")
    finite = float(np.isfinite(data).mean())
    if finite < MIN_FINITE_FRACTION:
        raise BadImage(f"{path.name} has {finite:.0%} finite pixels (at least {MIN_FINITE_FRACTION:.0%} needed)")
    absent = [k for k in IMAGE_HEADER_KEYS if k not in header]
    if absent:
        raise BadImage(f"{path.name} header lacks {', '.join(absent)}")
    unit = str(header["BUNIT"]).strip().lower()
    if unit not in FLUX_UNITS:
        raise BadImage(f"{path.name} has BUNIT = {header['BUNIT']!r}; pixel values must be in nanomaggy")
    pixscale = _header_number(header, "PIXSCALE", path.name, 0.0, MAX_PIXSCALE_ARCSEC)
    psf = _header_number(header, "PSF_FWHM", path.name, 0.0, MAX_PSF_FWHM_ARCSEC)
    if not wcs.has_celestial:
        raise BadImage(f"{path.name} has no celestial WCS")
    if ra is not None and dec is not None and np.isfinite(ra) and np.isfinite(dec):
        offset = _wcs_centre_offset_arcsec(wcs, data.shape, ra, dec)
        tolerance = max(CENTRE_TOLERANCE_ARCSEC, CENTRE_TOLERANCE_FRACTION * min(data.shape) * pixscale)
        if not offset <= tolerance:
            raise BadImage(
                f"{path.name} is centred {offset:.1f} arcsec from the catalogue position "
                f"(ra {ra:.5f}, dec {dec:.5f}); at most {tolerance:.1f} arcsec allowed"
            )
    return ImageInfo(
        height=int(data.shape[0]),
        width=int(data.shape[1]),
        pixscale_arcsec=pixscale,
        psf_fwhm_arcsec=psf,
        band=str(header["BAND"]).strip(),
        checksum=hashlib.sha256(raw).hexdigest(),
    )
