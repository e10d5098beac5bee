"""DataLink 1.1: a galaxy's links (/datalink/links?ID=<galaxy_id>), and the service descriptor results carry.

A galaxy's ID here is its ``galaxy_id`` (the service's row id, the one in TAP's tables, the
cone search's rows and the galaxy's page). Its links: the g (and i) FITS cutouts, the
preprocessing previews, its page, its predictions (a TAP query of ``morphomass.predictions``)
and the model sets they came from, each with its semantics from the IVOA vocabulary
(http://www.ivoa.net/rdf/datalink/core). An ID that is no galaxy, or a private one, gets a
row with its fault in ``error_message``, as the standard asks. Results that carry galaxies
(the cone search from VERB=2, a TAP result with a ``galaxy_id`` column) end with a service
descriptor (``RESOURCE type="meta" utype="adhoc:service"``) pointing at this endpoint with
the galaxy_id column as its ID, so TOPCAT's activation actions and pyvo's
``iter_datalinks()`` follow it.
"""

from __future__ import annotations

import io
import urllib.parse
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from astropy.io.votable.tree import Field, Info, Resource, TableElement, VOTableFile

from catalogue import selectors
from catalogue.models import Galaxy, Image

STANDARD_ID = "ivo://ivoa.net/std/DataLink#links-1.1"
#: The column whose values are a galaxy's DataLink ID.
ID_COLUMN = "galaxy_id"
CONTENT_TYPE = "application/x-votable+xml;content=datalink"
#: The most IDs one request may ask for (pyvo sends a result's IDs in batches).
MAX_IDS = 1000
#: The {links} response's columns: (name, datatype, UCD, description).
FIELDS = (
    ("ID", "char", "meta.id;meta.main", "the galaxy_id the link is for"),
    ("access_url", "char", "meta.ref.url", "where the linked resource is"),
    ("service_def", "char", "meta.ref", "the service descriptor to use (none here)"),
    ("error_message", "char", "meta.code.error", "why there is no link for this ID"),
    ("semantics", "char", "meta.code", "what the link is to the galaxy (IVOA datalink/core vocabulary)"),
    ("description", "char", "meta.note", "what the link is, in words"),
    ("content_type", "char", "meta.code.mime", "the linked resource's MIME type"),
    ("content_length", "long", "phys.size;meta.file", "the linked resource's size, where known"),
    ("local_semantics", "char", "meta.code", "this service's name for the kind of link"),
)


@dataclass(frozen=True)
class Link:
    id: str
    access_url: str = ""
    error_message: str = ""
    semantics: str = "#this"
    description: str = ""
    content_type: str = ""
    content_length: int | None = None
    local_semantics: str = ""


def requested_ids(values: list[str]) -> list[str]:
    """The IDs asked for (each ID parameter; commas are not separators: an ID is one value)."""
    ids = [v.strip() for v in values if v.strip()]
    if not ids:
        raise ValueError("ID is required: a galaxy_id, as TAP's tables and the cone search give it")
    if len(ids) > MAX_IDS:
        raise ValueError(f"{len(ids)} IDs in one request: at most {MAX_IDS}")
    return ids


def links(ids: list[str], base: str) -> list[Link]:
    """Every link of every ID, in the order asked (a fault row for an ID that is no public galaxy)."""
    numbers = {i: int(i) for i in ids if i.isascii() and i.isdigit() and len(i) <= 18}  # a bigint, not more
    galaxies = selectors.public_galaxies_with_links(numbers.values())
    model_sets = selectors.model_sets_that_predicted(galaxies)
    found: list[Link] = []
    for item in ids:
        if item not in numbers:
            found.append(Link(item, error_message=f"UsageFault: ID {item!r} is not a galaxy_id (a whole number)"))
        elif numbers[item] not in galaxies:
            found.append(Link(item, error_message=f"NotFoundFault: no galaxy {item}"))
        else:
            found.extend(_galaxy_links(item, galaxies[numbers[item]], sorted(model_sets.get(numbers[item], ())), base))
    return found


def _galaxy_links(item: str, galaxy: Galaxy, model_sets: list[str], base: str) -> list[Link]:
    name = f"{galaxy.survey.name} {galaxy.objid}"
    page = f"{base}/galaxies/{galaxy.pk}"
    # (access URL, semantics, description, content type, local semantics)
    found: list[tuple[str, str, str, str, str]] = []
    images = {image.band: image for image in galaxy.images.all() if image.status == Image.Status.OK and image.file}
    for band, semantics in (("g", "#this"), ("i", "#counterpart")):
        if band in images:
            url = f"{page}/{band}.fits"
            found.append((url, semantics, f"{band}-band FITS cutout of {name}", "application/fits", f"cutout-{band}"))
    if "g" in images:
        found.append((f"{page}/g.png", "#preview", f"g-band cutout of {name} (PNG)", "image/png", "preview-cutout"))
    preprocessed = getattr(galaxy, "preprocessed", None)
    if preprocessed is not None and preprocessed.status == "ok":
        what = f"{name} after preprocessing: stars removed (PNG)"
        found.append((f"{page}/clean.png", "#preview-image", what, "image/png", "preview-clean"))
    found.append((f"{page}/", "#documentation", f"{name}: its page (images, predictions, intervals)", "text/html", "page"))
    query = f"SELECT * FROM morphomass.predictions WHERE galaxy_id = {galaxy.pk}"
    tap = f"{base}/tap/sync?" + urllib.parse.urlencode({"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": query})
    what = f"the predicted M/L of {name} by every model (VOTable)"
    found.append((tap, "#derivation", what, "application/x-votable+xml", "predictions"))
    for model_set in model_sets:
        url = f"{base}/api/model-sets/{urllib.parse.quote(model_set)}/"
        what = f"the model set {model_set} that predicted {name} (JSON)"
        found.append((url, "#auxiliary", what, "application/json", "model-set"))
    return [
        Link(item, url, semantics=semantics, description=what, content_type=kind, local_semantics=local)
        for url, semantics, what, kind, local in found
    ]


def links_votable(found: list[Link]) -> bytes:
    """The {links} response: a VOTable with DataLink 1.1's columns and its standardID INFO."""
    document = VOTableFile(version="1.4")
    resource = Resource(type="results")
    document.resources.append(resource)
    resource.infos.append(Info(name="standardID", value=STANDARD_ID))
    table = TableElement(document, name="links")
    resource.tables.append(table)
    for name, datatype, ucd, description in FIELDS:
        field = Field(document, name=name, ID=name, datatype=datatype, ucd=ucd, arraysize="*" if datatype == "char" else None)
        if name == "content_length":
            field.unit = "byte"
        field.description = description
        table.fields.append(field)
    table.create_arrays(len(found))
    for i, link in enumerate(found):
        length = -1 if link.content_length is None else link.content_length
        table.array[i] = (
            link.id,
            link.access_url,
            "",
            link.error_message,
            link.semantics,
            link.description,
            link.content_type,
            length,
            link.local_semantics,
        )
        table.array.mask[i] = tuple([False] * 7 + [link.content_length is None] + [False])
    buffer = io.BytesIO()
    document.to_xml(buffer, tabledata_format="tabledata")
    return buffer.getvalue()


def descriptor(base: str, ref: str) -> bytes:
    """The service descriptor a result carrying galaxies ends with: this endpoint, ID from the FIELD ``ref``."""
    access = f"{base}/datalink/links"
    return (
        '<RESOURCE type="meta" utype="adhoc:service" name="datalink">\n'
        "<DESCRIPTION>DataLink: each galaxy's cutouts, previews, page, predictions and model sets</DESCRIPTION>\n"
        f'<PARAM name="standardID" datatype="char" arraysize="*" value="{STANDARD_ID}"/>\n'
        f'<PARAM name="accessURL" datatype="char" arraysize="*" value={quoteattr(access)}/>\n'
        f'<PARAM name="contentType" datatype="char" arraysize="*" value="{CONTENT_TYPE}"/>\n'
        '<GROUP name="inputParams">\n'
        f'<PARAM name="ID" datatype="char" arraysize="*" value="" ref={quoteattr(ref)} ucd="meta.id;meta.main"/>\n'
        "</GROUP>\n"
        "</RESOURCE>\n"
    ).encode()


def with_descriptor(footer: bytes, base: str, ref: str) -> bytes:
    """A VOTable's footer with the service descriptor as the document's last RESOURCE."""
    at = footer.rindex(b"</VOTABLE>")
    return footer[:at] + descriptor(base, ref) + footer[at:]
