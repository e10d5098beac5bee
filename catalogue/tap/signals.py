"""TAP's views around migrations: dropped before (migrations may alter what they read), made after."""

from __future__ import annotations

from django.db import connections, transaction

from catalogue.tap import schema


def _postgresql(using: str) -> bool:
    return connections[using].vendor == "postgresql"


def before_migrate(sender, using: str = "default", **kwargs) -> None:  # noqa: ARG001 - signal signature
    if _postgresql(using):
        with connections[using].cursor() as cursor:
            schema.uninstall(cursor)


def after_migrate(sender, using: str = "default", **kwargs) -> None:  # noqa: ARG001 - signal signature
    if _postgresql(using):
        with transaction.atomic(using=using), connections[using].cursor() as cursor:
            schema.install(cursor)
