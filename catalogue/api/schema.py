"""What the OpenAPI schema says beyond what drf-spectacular infers, so that it describes every response.

drf-spectacular documents the success of each operation. A client (or schemathesis) also
meets the errors: a 400 with the reasons, 401/403 without the right credentials, 404 for
an unknown object or page, 409 when a run is already active, 429 when throttled. This
post-processing hook adds them, one error shape for all, and says in the parameters what
the service refuses (NUL bytes, which PostgreSQL cannot store).
"""

from __future__ import annotations

from catalogue.columns import PREDICTION_FIELDS

#: Every error body: DRF's ``{"detail": ...}`` or a validation error's ``{"field": [reasons]}``.
ERROR_SCHEMA = {
    "type": "object",
    "description": "what was wrong: 'detail', or the reasons per parameter or field",
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": True,
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}

#: Status codes every operation may answer, and why.
COMMON_ERRORS = {
    "400": "bad parameters or body (the reasons per parameter); a value PostgreSQL cannot store",
    "401": "credentials missing or wrong",
    "403": "not allowed for this user (staff only), or a missing CSRF token",
    "404": "no such object, page or cursor",
    "429": "throttled: too many requests (see Retry-After)",
}
#: Operations that can meet an active run (one per survey) or a run that cannot be cancelled.
CONFLICT = "another run is active on this survey (named in the body), or the run is not active"
CONFLICT_OPERATIONS = {("/api/runs/", "post"), ("/api/runs/{id}/cancel/", "post")}

#: PostgreSQL text cannot hold U+0000; the middleware answers such a value with a 400.
NO_NUL = "^[^\\x00]*$"


def add_error_responses(result: dict, generator, request, public) -> dict:  # noqa: ARG001 - the hook's signature
    """drf-spectacular's post-processing hook: error responses, string patterns, optional prediction columns."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            errors = dict(COMMON_ERRORS)
            if (path, method) in CONFLICT_OPERATIONS:
                errors["409"] = CONFLICT
            for code, description in errors.items():
                responses.setdefault(code, {"description": description, "content": {"application/json": {"schema": ERROR_REF}}})
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                if schema.get("type") == "string" and "enum" not in schema and "format" not in schema:
                    schema.setdefault("pattern", NO_NUL)
    _prediction_columns_optional(result["components"]["schemas"])
    return result


def _prediction_columns_optional(schemas: dict) -> None:
    """A galaxy row carries ml_pred, the intervals and the flag only with ``?model=``, and null where unpredicted."""
    galaxy = schemas.get("Galaxy")
    if not galaxy:
        return
    galaxy["required"] = [name for name in galaxy.get("required", []) if name not in PREDICTION_FIELDS]
    for name in PREDICTION_FIELDS:
        if name in galaxy.get("properties", {}):
            galaxy["properties"][name]["nullable"] = True
