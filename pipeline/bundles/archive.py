"""A user's sample as an archive (zip, or tar with or without gzip): listed, checked and unpacked safely.

An archive comes from outside, so nothing in it is trusted: an entry whose name is absolute
or climbs with ``..``, a link, a device or a FIFO is refused and reported, never written; an
entry that is neither a cutout named as in the bundle format (``<objid>_<band>.fits``) nor a
bundle file (``catalogue.csv``, ...) is reported and skipped. Accepted entries are written
under the destination by their base name only, so no entry can reach outside it, and each is
copied no further than the size its header declares. :func:`scan` reads the headers alone, so
the sizes are checked before anything is unpacked.
"""

from __future__ import annotations

import re
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from pipeline.bundles.reader import CATALOGUE_NAMES

#: A cutout as the bundle format names it: <objid>_<band>.fits.
CUTOUT_NAME = re.compile(r"^(?P<objid>\d{1,20})_(?P<band>[gi])\.fits$")
#: The files of a bundle besides its cutouts (docs/bundles.md) that a sample may carry.
BUNDLE_FILES = frozenset({*CATALOGUE_NAMES, "gswlc.dat", "gz2.csv", "stars.csv"})
COPY_BLOCK = 1 << 20


class ArchiveError(ValueError):
    """The archive cannot be used at all (not an archive, over a limit); the message says why."""


@dataclass
class Entry:
    """One member of an archive, as its header describes it."""

    name: str
    size: int
    kind: str  # file, directory, link, device, other


@dataclass
class Fault:
    """One entry refused or skipped, with the reason (the job's fault report lists it)."""

    kind: str
    reason: str
    file: str
    objid: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Listing:
    """What an archive holds: its entries and the bytes they unpack to."""

    entries: list[Entry] = field(default_factory=list)

    @property
    def unpacked_bytes(self) -> int:
        return sum(e.size for e in self.entries if e.kind == "file")


def archive_kind(path: Path, label: str = "") -> str:
    """``zip`` or ``tar`` by the file's content (not its name); ArchiveError (naming it ``label``, else by its
    file name) for anything else."""
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except (OSError, EOFError, tarfile.TarError):
        pass
    raise ArchiveError(f"{label or path.name} is neither a zip nor a tar archive (gzip allowed)")


def _zip_kind(info: zipfile.ZipInfo) -> str:
    if info.is_dir():
        return "directory"
    mode = (info.external_attr >> 16) & 0o170000
    return {0: "file", 0o100000: "file", 0o120000: "link"}.get(mode, "device")


def _tar_kind(info: tarfile.TarInfo) -> str:
    if info.isfile():
        return "file"
    if info.isdir():
        return "directory"
    if info.issym() or info.islnk():
        return "link"
    if info.isdev() or info.isfifo():
        return "device"
    return "other"


def _entries(path: Path, label: str) -> Iterator[Entry]:
    try:
        if archive_kind(path, label) == "zip":
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    yield Entry(info.filename, info.file_size, _zip_kind(info))
        else:
            with tarfile.open(path, "r:*") as archive:
                for info in archive:
                    yield Entry(info.name, info.size, _tar_kind(info))
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise ArchiveError(f"{label} is a damaged archive ({type(exc).__name__}: {exc})") from exc


def scan(path: Path, max_unpacked_bytes: int, max_entries: int, label: str = "") -> Listing:
    """The archive's entries from their headers, stopping as soon as a limit is passed (``label``: the
    archive's name in messages, by default its file name).

    Raises
    ------
    ArchiveError
        for a file that is not a readable archive, more than ``max_entries`` entries, or
        entries that would unpack to more than ``max_unpacked_bytes``.
    """
    label = label or path.name
    listing = Listing()
    total = 0
    for entry in _entries(path, label):
        listing.entries.append(entry)
        total += entry.size if entry.kind == "file" else 0
        if total > max_unpacked_bytes:
            raise ArchiveError(f"{label} unpacks to more than {max_unpacked_bytes:,} bytes (the limit per job); split the sample")
        if len(listing.entries) > max_entries:
            raise ArchiveError(f"{label} has more than {max_entries:,} entries (the limit per job); split the sample")
    return listing


def refusal(entry: Entry) -> Fault | None:
    """Why an entry must not be unpacked at all (None for a plain file with a safe relative name)."""
    name = entry.name.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return Fault("unsafe_entry", "an absolute path is refused", entry.name)
    if ".." in parts:
        return Fault("unsafe_entry", "a path that climbs out with '..' is refused", entry.name)
    if entry.kind in ("link", "device", "other"):
        return Fault("unsafe_entry", f"a {entry.kind} is refused: only plain files are unpacked", entry.name)
    return None


def wanted(entry: Entry, objids: set[int] | None) -> tuple[str | None, Fault | None]:
    """The base name an entry is unpacked as, or the fault that skips it.

    A cutout must be named ``<objid>_<band>.fits`` and, once the table is known (``objids``),
    name one of its galaxies; a bundle file keeps its name; anything else is skipped.
    """
    if entry.kind == "directory":
        return None, None
    refused = refusal(entry)
    if refused is not None:
        return None, refused
    base = PurePosixPath(entry.name.replace("\\", "/")).name
    if base in BUNDLE_FILES:
        return base, None
    match = CUTOUT_NAME.match(base)
    if match is None:
        if base.startswith(".") or base.startswith("__MACOSX"):
            return None, None  # an archiver's own bookkeeping (.DS_Store, ._x), not the user's
        return None, Fault("unknown_entry", "not a cutout named <objid>_<band>.fits (band g or i) nor a bundle file", entry.name)
    objid = int(match["objid"])
    if objids is not None and objid not in objids:
        return None, Fault("not_in_table", f"objid {objid} is not in the table", entry.name, objid)
    return base, None


def extract(
    path: Path,
    dest: Path,
    objids: set[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
    only: set[str] | None = None,
) -> list[Fault]:
    """Unpack the entries :func:`wanted` accepts into ``dest`` (flat, by base name); the faults of the rest.

    ``only``: unpack just these base names (the others are neither written nor reported).

    A second entry with a base name already unpacked is skipped as a duplicate. Each file is
    copied no further than its declared size (a zip entry that holds more fails to read).
    """
    dest.mkdir(parents=True, exist_ok=True)
    faults: list[Fault] = []
    seen: set[str] = set()
    kind = archive_kind(path)
    opened = zipfile.ZipFile(path) if kind == "zip" else tarfile.open(path, "r:*")
    with opened as archive:
        members = archive.infolist() if kind == "zip" else archive.getmembers()
        total = len(members)
        for n, member in enumerate(members, 1):
            entry = (
                Entry(member.filename, member.file_size, _zip_kind(member))
                if kind == "zip"
                else Entry(member.name, member.size, _tar_kind(member))
            )
            base, fault = wanted(entry, objids)
            if only is not None and base not in only:
                continue
            if fault is not None:
                faults.append(fault)
            elif base is not None and base in seen:
                faults.append(Fault("duplicate_entry", f"{base} appears twice: the first is used", entry.name))
            elif base is not None:
                seen.add(base)
                try:
                    source = archive.open(member) if kind == "zip" else archive.extractfile(member)
                    with source, open(dest / base, "wb") as out:
                        _copy(source, out, entry.size)
                except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, ValueError) as exc:
                    (dest / base).unlink(missing_ok=True)
                    faults.append(Fault("bad_entry", f"could not be unpacked ({type(exc).__name__}: {exc})", entry.name))
            if progress is not None and (n % 200 == 0 or n == total):
                progress(n, total)
    return faults


def _copy(source, out, limit: int) -> None:
    left = limit
    while left > 0:
        block = source.read(min(COPY_BLOCK, left))
        if not block:
            break
        out.write(block)
        left -= len(block)
    if source.read(1):
        raise ValueError(f"the entry holds more than the {limit:,} bytes its header declares")
