"""TAP's views around migrations: dropped before (migrations may alter what they read), made after."""

from __future__ import annotations

import logging

from django.db import DatabaseError, connections, transaction

from catalogue.tap import schema

log = logging.getLogger(__name__)


def _postgresql(using: str) -> bool:
    return connections[using].vendor == "postgresql"


def before_migrate(sender, using: str = "default", **kwargs) -> None:  # noqa: ARG001 - signal signature
    if _postgresql(using):
        with connections[using].cursor() as cursor:
            schema.uninstall(cursor)


def after_migrate(sender, using: str = "default", **kwargs) -> None:  # noqa: ARG001 - signal signature
    """Make the TAP views; a database migrated back to an older schema keeps none (TAP says it has no tables)."""
    if not _postgresql(using):
        return
    try:
        with transaction.atomic(using=using), connections[using].cursor() as cursor:
            schema.install(cursor)
    except DatabaseError as exc:
        log.warning("TAP: the views were not made (%s); migrate to the latest schema to serve TAP", exc)
