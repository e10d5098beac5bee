"""Time limits of the task kinds, and the broker settings that must agree with them.

Every Celery task has a soft limit (it is asked to stop: ``SoftTimeLimitExceeded``) and a
hard limit (its process is killed). The Redis broker redelivers a task that was not
acknowledged within its *visibility timeout*; with late acknowledgement that timeout must
exceed the longest hard limit, or a long task still running would be handed to a second
worker and run twice. Limits bound runaway work; they do not decide whether a worker is
alive: every running chunk task beats (:func:`heartbeat_s`) from a thread of its own, and
the reaper hands a chunk whose heartbeat stopped for :func:`heartbeat_silence_s` to
another worker, long before any visibility timeout.

The defaults suit production; ``MORPHOMASS_TASK_HARD_LIMITS`` (JSON, kind -> seconds),
``MORPHOMASS_HEARTBEAT_S``, ``MORPHOMASS_HEARTBEAT_SILENCE_S``, ``MORPHOMASS_RESEND_AFTER_S`` and
``MORPHOMASS_WORKFLOW_STALL_S`` override them, which is
how the crash-recovery tests shrink a recovery to seconds. Which kind a stage's chunks are
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
#: Every running chunk task reports a heartbeat this often (``MORPHOMASS_HEARTBEAT_S``
#: overrides), from a thread of its own, whatever its body is doing.
DEFAULT_HEARTBEAT_S = 30.0
#: A chunk whose heartbeat stopped for this long lost its worker: the reaper hands it to
#: another (``MORPHOMASS_HEARTBEAT_SILENCE_S`` overrides).
DEFAULT_HEARTBEAT_SILENCE_S = 180.0
#: A run none of whose chunks a worker has taken for this long is failed: no worker is
#: listening on its queue. Long, because a busy queue may hold a run back for hours.
DEFAULT_QUEUE_WAIT_S = 24 * 3600.0
#: A queued chunk that no worker claimed this long after its message was sent is sent again
#: (its message may have been lost with the broker), then after twice as long, and so on up
#: to 64 times (``MORPHOMASS_RESEND_AFTER_S`` overrides). Duplicates are harmless: one claims.
DEFAULT_RESEND_AFTER_S = 60.0
#: An active workflow with no active stage for this long lost its boundary to an outage: the
#: reaper moves it on (``MORPHOMASS_WORKFLOW_STALL_S`` overrides).
DEFAULT_WORKFLOW_STALL_S = 60.0
#: A stage whose items failed in more than this share of those it handled fails, naming the
#: commonest reasons, instead of succeeding with nothing to hand on (``MORPHOMASS_MAX_FAILED_SHARE``
#: overrides; 1 lets every stage succeed whatever failed).
DEFAULT_MAX_FAILED_SHARE = 0.5


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


def queue_wait_limit_s() -> float:
    """How long a run may wait with no chunk taken (``MORPHOMASS_QUEUE_WAIT_S`` overrides)."""
    return float(os.environ.get("MORPHOMASS_QUEUE_WAIT_S", DEFAULT_QUEUE_WAIT_S))


def max_failed_share() -> float:
    """The share of a stage's items that may fail before the stage fails (``MORPHOMASS_MAX_FAILED_SHARE`` overrides)."""
    return float(os.environ.get("MORPHOMASS_MAX_FAILED_SHARE", DEFAULT_MAX_FAILED_SHARE))


def heartbeat_s() -> float:
    """Seconds between two heartbeats of a running chunk task (``MORPHOMASS_HEARTBEAT_S`` overrides)."""
    return float(os.environ.get("MORPHOMASS_HEARTBEAT_S", DEFAULT_HEARTBEAT_S))


def heartbeat_silence_s() -> float:
    """Seconds without a heartbeat after which a chunk's worker is taken for lost (``MORPHOMASS_HEARTBEAT_SILENCE_S``)."""
    return float(os.environ.get("MORPHOMASS_HEARTBEAT_SILENCE_S", DEFAULT_HEARTBEAT_SILENCE_S))


def resend_after_s(sends: int = 1) -> float:
    """How long a queued chunk sent ``sends`` times waits for a worker before it is sent again:
    ``MORPHOMASS_RESEND_AFTER_S`` (default a minute), doubled for each earlier send up to 64 times."""
    base = float(os.environ.get("MORPHOMASS_RESEND_AFTER_S", DEFAULT_RESEND_AFTER_S))
    return base * 2 ** min(max(sends - 1, 0), 6)


def workflow_stall_s() -> float:
    """Seconds an active workflow may go with no active stage before the reaper moves it on."""
    return float(os.environ.get("MORPHOMASS_WORKFLOW_STALL_S", DEFAULT_WORKFLOW_STALL_S))
