"""Time limits of the task kinds, and the broker settings that must agree with them.

Every Celery task has a soft limit (it is asked to stop: ``SoftTimeLimitExceeded``) and a
hard limit (its process is killed). The Redis broker redelivers a task that was not
acknowledged within its *visibility timeout*; with late acknowledgement that timeout must
exceed the longest hard limit, or a long task still running would be handed to a second
worker and run twice. The periodic reaper fails a run whose chunks have been silent for
longer than their hard limit plus a grace period, so no run stays ``running`` forever.

The defaults suit production; ``MORPHOMASS_TASK_HARD_LIMITS`` (JSON, kind -> seconds)
overrides them, and ``MORPHOMASS_REAPER_GRACE_S`` the reaper's grace period, which is how
the crash-recovery tests shrink a redelivery to seconds. Which kind a stage's chunks are
is said once, in its registry entry (:attr:`catalogue.registry.Stage.limit`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

#: Hard limit (s) per task kind. ``chunk``: one chunk of per-galaxy work (preprocessing,
#: feature extraction, prediction). ``train``: one model training. ``control``: starting,
#: finishing and reaping runs.
DEFAULT_HARD_LIMITS_S: dict[str, float] = {"chunk": 1800.0, "train": 6 * 3600.0, "control": 300.0}
#: The soft limit leaves this fraction of the hard limit to save what was done.
SOFT_FRACTION = 0.9
#: The reaper waits this long past a hard limit before it declares a run's workers lost
#: (``MORPHOMASS_REAPER_GRACE_S`` overrides).
DEFAULT_REAPER_GRACE_S = 60.0
#: A run none of whose chunks a worker has taken for this long is failed: no worker is
#: listening on its queue. Long, because a busy queue may hold a run back for hours.
DEFAULT_QUEUE_WAIT_S = 24 * 3600.0


@dataclass(frozen=True)
class Limits:
    soft_s: float
    hard_s: float


def hard_limits() -> dict[str, float]:
    """Hard limits per kind: the defaults, overridden by ``MORPHOMASS_TASK_HARD_LIMITS``."""
    limits = dict(DEFAULT_HARD_LIMITS_S)
    raw = os.environ.get("MORPHOMASS_TASK_HARD_LIMITS", "").strip()
    if raw:
        try:
            overrides = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"MORPHOMASS_TASK_HARD_LIMITS is not JSON ({exc}): {raw!r}") from None
        unknown = set(overrides) - set(limits)
        if unknown:
            raise ValueError(f"MORPHOMASS_TASK_HARD_LIMITS names unknown kind(s) {sorted(unknown)}; known: {sorted(limits)}")
        for kind, seconds in overrides.items():
            if not float(seconds) > 0:
                raise ValueError(f"MORPHOMASS_TASK_HARD_LIMITS[{kind!r}] must be positive, got {seconds!r}")
            limits[kind] = float(seconds)
    return limits


def limits(kind: str) -> Limits:
    """Soft and hard limit of a task kind, in seconds."""
    hard = hard_limits()[kind]
    return Limits(soft_s=SOFT_FRACTION * hard, hard_s=hard)


def visibility_timeout_s() -> float:
    """Broker visibility timeout: above the longest hard limit, so no running task is redelivered."""
    return 1.1 * max(hard_limits().values()) + 5.0


def reaper_grace_s() -> float:
    """Seconds past a hard limit before the reaper acts (``MORPHOMASS_REAPER_GRACE_S`` overrides)."""
    return float(os.environ.get("MORPHOMASS_REAPER_GRACE_S", DEFAULT_REAPER_GRACE_S))


def silence_limit_s(kind: str = "chunk") -> float:
    """How long a chunk of this time-limit kind may stay silent in a worker's hands before the reaper acts."""
    return limits(kind).hard_s + reaper_grace_s()


def queue_wait_limit_s() -> float:
    """How long a run may wait with no chunk taken (``MORPHOMASS_QUEUE_WAIT_S`` overrides)."""
    return float(os.environ.get("MORPHOMASS_QUEUE_WAIT_S", DEFAULT_QUEUE_WAIT_S))
