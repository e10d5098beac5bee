"""The one clock: the database's.

Workers on many machines stamp heartbeats, claims and finishes, and the reaper judges them
against a silence limit of minutes. Each machine's own clock can be off by that much (a VM
resumed, NTP not yet synced), and a worker whose clock runs behind would look silent and
have its chunk taken from it. So every time the ledger records or compares is the
database's: :func:`database_now` where Python needs the value, and
:class:`django.db.models.functions.Now` where an UPDATE can stamp it itself.
"""

from __future__ import annotations

from datetime import datetime

from django.db import connection
from django.utils import timezone


def database_now() -> datetime:
    """The database server's current time (aware, UTC); the process's own clock on SQLite, whose
    database is a file on this machine and has no clock of its own to share."""
    if connection.vendor != "postgresql":
        return timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]
