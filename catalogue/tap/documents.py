"""The XML documents TAP answers with besides results: errors, UWS jobs, VOSI capabilities, availability, tables."""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from datetime import datetime
from xml.sax.saxutils import escape

from django.conf import settings

from catalogue.api.scs import MAX_RECORDS, MAX_SR_DEG
from catalogue.models import TapJob

UWS = "http://www.ivoa.net/xml/UWS/v1.0"
XLINK = "http://www.w3.org/1999/xlink"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
NAMESPACES = {
    "uws": UWS,
    "xlink": XLINK,
    "xsi": XSI,
    "vr": "http://www.ivoa.net/xml/VOResource/v1.0",
    "vs": "http://www.ivoa.net/xml/VODataService/v1.1",
    "tr": "http://www.ivoa.net/xml/TAPRegExt/v1.0",
    "cs": "http://www.ivoa.net/xml/ConeSearch/v1.0",
}
for _prefix in ("uws", "xlink", "xsi"):
    ET.register_namespace(_prefix, NAMESPACES[_prefix])
#: ADQL's geometry this service compiles (catalogue.tap.adql), as TAPRegExt names them.
GEOMETRY_FEATURES = ("POINT", "CIRCLE", "BOX", "POLYGON", "CONTAINS", "INTERSECTS", "DISTANCE")
#: ADQL 2.1's optional features this service serves: TAPRegExt feature type -> forms.
ADQL_21_FEATURES = {
    "ivo://ivoa.net/std/TAPRegExt#features-adql-string": ("LOWER", "UPPER", "ILIKE"),
    "ivo://ivoa.net/std/TAPRegExt#features-adql-unit": ("IN_UNIT",),
    "ivo://ivoa.net/std/TAPRegExt#features-adql-offset": ("OFFSET",),
    "ivo://ivoa.net/std/TAPRegExt#features-adql-common-table": ("WITH",),
    "ivo://ivoa.net/std/TAPRegExt#features-adql-sets": ("UNION", "EXCEPT", "INTERSECT"),
}
#: What ADQL 2.1 has that this service refuses (the capabilities and the errors say so).
ADQL_REFUSED = (
    "CAST, AREA, CENTROID, REGION, COORD1, COORD2, COORDSYS; INTERSECTS of two regions; "
    "geometry values as result columns; user-defined functions"
)
VOTABLE_TYPE = "application/x-votable+xml"
XML_TYPE = "text/xml; charset=utf-8"


#: ElementTree's prefixes are global: the three VOSI documents each call theirs "vosi", so a
#: document is serialised under a lock with its own registered.
_PREFIXES = threading.Lock()


def _xml(root: ET.Element, vosi: str | None = None) -> bytes:
    with _PREFIXES:
        if vosi:
            ET.register_namespace("vosi", vosi)
        return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def error_votable(message: str) -> bytes:
    """A TAP error document: a VOTable whose RESOURCE holds INFO QUERY_STATUS=ERROR with the message."""
    text = escape(message.replace("\x00", ""))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n'
        ' <RESOURCE type="results">\n'
        f'  <INFO name="QUERY_STATUS" value="ERROR">{text}</INFO>\n'
        " </RESOURCE>\n"
        "</VOTABLE>\n"
    ).encode()


def iso_time(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if value else None


def _add(parent: ET.Element, tag: str, text: str | None = None, nil: bool = False, **attrs) -> ET.Element:
    element = ET.SubElement(parent, f"{{{UWS}}}{tag}", {k.replace("__", ":"): v for k, v in attrs.items()})
    if text is None and nil:
        element.set(f"{{{XSI}}}nil", "true")
    elif text is not None:
        element.text = text
    return element


def job(job: TapJob, url: str) -> bytes:
    """A UWS 1.1 job document."""
    root = ET.Element(f"{{{UWS}}}job", {"version": "1.1"})
    _add(root, "jobId", str(job.pk))
    if job.run_id:
        _add(root, "runId", job.run_id)
    _add(root, "ownerId", job.owner.get_username() if job.owner_id else None, nil=True)
    _add(root, "phase", job.phase)
    _add(root, "quote", None, nil=True)
    _add(root, "creationTime", iso_time(job.created))
    _add(root, "startTime", iso_time(job.started), nil=True)
    _add(root, "endTime", iso_time(job.finished), nil=True)
    _add(root, "executionDuration", str(job.execution_duration))
    _add(root, "destruction", iso_time(job.destruction))
    parameters = _add(root, "parameters")
    for key, value in sorted(job.parameters.items()):
        _add(parameters, "parameter", str(value), id=key)
    results = _add(root, "results")
    if job.phase == TapJob.Phase.COMPLETED and job.result:
        _add(results, "result", None, id="result", **{f"{{{XLINK}}}href": f"{url}/results/result", f"{{{XLINK}}}type": "simple"})
    if job.phase == TapJob.Phase.ERROR:
        summary = _add(root, "errorSummary", type="fatal", hasDetail="true")
        _add(summary, "message", job.error or "the query failed")
    return _xml(root)


def job_list(jobs, base: str) -> bytes:
    """A UWS 1.1 job list."""
    root = ET.Element(f"{{{UWS}}}jobs", {"version": "1.1"})
    for item in jobs:
        ref = _add(root, "jobref", id=str(item.pk), **{f"{{{XLINK}}}href": f"{base}/{item.pk}", f"{{{XLINK}}}type": "simple"})
        _add(ref, "phase", item.phase)
        if item.run_id:
            _add(ref, "runId", item.run_id)
        _add(ref, "ownerId", item.owner.get_username() if item.owner_id else None, nil=True)
        _add(ref, "creationTime", iso_time(item.created))
    return _xml(root)


def results(job: TapJob, url: str) -> bytes:
    root = ET.Element(f"{{{UWS}}}results")
    if job.phase == TapJob.Phase.COMPLETED and job.result:
        _add(root, "result", None, id="result", **{f"{{{XLINK}}}href": f"{url}/results/result", f"{{{XLINK}}}type": "simple"})
    return _xml(root)


def parameters(job: TapJob) -> bytes:
    root = ET.Element(f"{{{UWS}}}parameters")
    for key, value in sorted(job.parameters.items()):
        _add(root, "parameter", str(value), id=key)
    return _xml(root)


def availability(available: bool, note: str) -> bytes:
    ns = "http://www.ivoa.net/xml/VOSIAvailability/v1.0"
    root = ET.Element(f"{{{ns}}}availability")
    ET.SubElement(root, f"{{{ns}}}available").text = "true" if available else "false"
    ET.SubElement(root, f"{{{ns}}}note").text = note
    return _xml(root, vosi=ns)


def _interface(parent: ET.Element, url: str, use: str, role: str | None = None, version: str | None = None) -> None:
    attrs = {f"{{{XSI}}}type": "vs:ParamHTTP"}
    if role:
        attrs["role"] = role
    if version:
        attrs["version"] = version
    interface = ET.SubElement(parent, "interface", attrs)
    ET.SubElement(interface, "accessURL", {"use": use}).text = url


def capabilities(base: str) -> bytes:
    """VOSI capabilities: TAP 1.1 (TAPRegExt), the VOSI endpoints and the cone search."""
    ns = "http://www.ivoa.net/xml/VOSICapabilities/v1.0"
    root = ET.Element(f"{{{ns}}}capabilities")
    for prefix in ("vr", "vs", "tr"):  # named in xsi:type values only, which ElementTree does not declare
        root.set(f"xmlns:{prefix}", NAMESPACES[prefix])
    tap = ET.SubElement(root, "capability", {"standardID": "ivo://ivoa.net/std/TAP", f"{{{XSI}}}type": "tr:TableAccess"})
    ET.SubElement(tap, "description").text = (
        f"TAP 1.1. UPLOAD=name,param:part takes a VOTable (or CSV, FITS) of at most {settings.TAP_UPLOAD_MAX_ROWS:,} rows"
        f" and {settings.TAP_UPLOAD_MAX_BYTES:,} bytes per table (TAP_UPLOAD.name; UPLOAD=name,https://... fetches"
        " a public URL); a table with ra and dec gets the"
        " catalogue's sky index. Worked queries: /tap/examples."
    )
    _interface(tap, f"{base}/tap", "base", role="std", version="1.1")
    language = ET.SubElement(tap, "language")
    ET.SubElement(language, "name").text = "ADQL"
    ET.SubElement(language, "version", {"ivo-id": "ivo://ivoa.net/std/ADQL#v2.1"}).text = "2.1"
    ET.SubElement(language, "version", {"ivo-id": "ivo://ivoa.net/std/ADQL#v2.0"}).text = "2.0"
    ET.SubElement(language, "description").text = (
        "ADQL 2.1; geometry on the catalogue's sky index (ICRS; BOX is a range in RA and Dec; convex POLYGONs;"
        f" INTERSECTS where one side is a POINT). Not served: {ADQL_REFUSED}."
    )
    for kind, forms in {"ivo://ivoa.net/std/TAPRegExt#features-adqlgeo": GEOMETRY_FEATURES, **ADQL_21_FEATURES}.items():
        features = ET.SubElement(language, "languageFeatures", {"type": kind})
        for name in forms:
            ET.SubElement(ET.SubElement(features, "feature"), "form").text = name
    for mime, alias, ivo in (
        (VOTABLE_TYPE, "votable", "ivo://ivoa.net/std/TAPRegExt#output-votable-td"),
        ("text/csv", "csv", None),
        ("application/fits", "fits", None),
    ):
        output = ET.SubElement(tap, "outputFormat", {"ivo-id": ivo} if ivo else {})
        ET.SubElement(output, "mime").text = mime
        ET.SubElement(output, "alias").text = alias
    for method in ("upload-inline", "upload-http", "upload-https"):
        ET.SubElement(tap, "uploadMethod", {"ivo-id": f"ivo://ivoa.net/std/TAPRegExt#{method}"})
    retention = ET.SubElement(tap, "retentionPeriod")
    ET.SubElement(retention, "default").text = str(int(settings.TAP_JOB_DAYS * 86400))
    duration = ET.SubElement(tap, "executionDuration")
    ET.SubElement(duration, "default").text = str(settings.TAP_ASYNC_DURATION_S)
    limit = ET.SubElement(tap, "outputLimit")
    ET.SubElement(limit, "default", {"unit": "row"}).text = str(settings.TAP_MAXREC_DEFAULT)
    ET.SubElement(limit, "hard", {"unit": "row"}).text = str(settings.TAP_MAXREC_LIMIT)
    upload_limit = ET.SubElement(tap, "uploadLimit")
    ET.SubElement(upload_limit, "hard", {"unit": "byte"}).text = str(settings.TAP_UPLOAD_MAX_BYTES)
    for name in ("capabilities", "availability", "tables"):
        vosi = ET.SubElement(root, "capability", {"standardID": f"ivo://ivoa.net/std/VOSI#{name}"})
        _interface(vosi, f"{base}/tap/{name}", "full")
    examples = ET.SubElement(root, "capability", {"standardID": "ivo://ivoa.net/std/DALI#examples"})
    interface = ET.SubElement(examples, "interface", {f"{{{XSI}}}type": "vr:WebBrowser"})
    ET.SubElement(interface, "accessURL", {"use": "full"}).text = f"{base}/tap/examples"
    # the cone search, by its standard's id only (validators do not know ConeSearch's own schema)
    cone = ET.SubElement(root, "capability", {"standardID": "ivo://ivoa.net/std/ConeSearch"})
    ET.SubElement(cone, "description").text = f"Simple Cone Search 1.03: SR up to {MAX_SR_DEG:g} deg, {MAX_RECORDS} rows"
    _interface(cone, f"{base}/scs/?", "base", role="std")
    return _xml(root, vosi=ns)


def tableset(schemas: list[dict], columns: bool = True) -> bytes:
    """VOSI tables (VODataService 1.1) from TAP_SCHEMA's rows, so the two always agree (without the
    columns and keys when ``columns`` is false: VOSI 1.1's detail=min)."""
    ns = "http://www.ivoa.net/xml/VOSITables/v1.0"
    root = ET.Element(f"{{{ns}}}tableset")
    root.set("xmlns:vs", NAMESPACES["vs"])
    for item in schemas:
        element = ET.SubElement(root, "schema")
        ET.SubElement(element, "name").text = item["name"]
        ET.SubElement(element, "description").text = item["description"]
        for table in item["tables"]:
            table_element = ET.SubElement(element, "table", {"type": table["type"]})
            ET.SubElement(table_element, "name").text = table["name"]
            ET.SubElement(table_element, "description").text = table["description"]
            for column in table["columns"] if columns else ():
                column_element = ET.SubElement(table_element, "column")
                ET.SubElement(column_element, "name").text = column["name"]
                if column["description"]:
                    ET.SubElement(column_element, "description").text = column["description"]
                if column["unit"]:
                    ET.SubElement(column_element, "unit").text = column["unit"]
                if column["ucd"]:
                    ET.SubElement(column_element, "ucd").text = column["ucd"]
                attrs = {f"{{{XSI}}}type": "vs:VOTableType"}
                if column["arraysize"]:
                    attrs["arraysize"] = column["arraysize"]
                ET.SubElement(column_element, "dataType", attrs).text = column["datatype"]
                if column["indexed"]:
                    ET.SubElement(column_element, "flag").text = "indexed"
                if column["std"]:
                    ET.SubElement(column_element, "flag").text = "std"
            for key in table["keys"] if columns else ():
                key_element = ET.SubElement(table_element, "foreignKey")
                ET.SubElement(key_element, "targetTable").text = key["target"]
                for from_column, target_column in key["columns"]:
                    pair = ET.SubElement(key_element, "fkColumn")
                    ET.SubElement(pair, "fromColumn").text = from_column
                    ET.SubElement(pair, "targetColumn").text = target_column
                ET.SubElement(key_element, "description").text = key["description"]
    return _xml(root, vosi=ns)
