"""Reachability of the external services the suite talks to for real.

Under ``REQUIRE_SERVICES=1`` (CI) a service that is down fails the run; otherwise the
tests that need it are skipped with the reason.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest

DEFAULT_PORTS = {"redis": 6379, "postgres": 5432, "postgresql": 5432, "amqp": 5672}


def services_required() -> bool:
    return os.environ.get("REQUIRE_SERVICES", "").strip().lower() in {"1", "true", "yes"}


def unreachable_reason(url: str, timeout: float = 2.0) -> str | None:
    """Return why the service at ``url`` cannot be reached, or None when a TCP connect works."""
    parsed = urlparse(url)
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or DEFAULT_PORTS.get(parsed.scheme, 0)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{parsed.scheme} at {host}:{port} is unreachable ({exc})"


def require_service(url: str) -> None:
    """Fail (when required) or skip the calling test if the service is down."""
    reason = unreachable_reason(url)
    if reason is None:
        return
    if services_required():
        pytest.fail(f"REQUIRE_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(reason)
