"""Fault injection for the crash-recovery tests: a worker that dies on chosen galaxies.

``MORPHOMASS_FAULTS`` (JSON) in a worker's environment: ``{"crash_objids": [...]}`` kills
the worker process (SIGKILL, as the kernel's OOM killer would) whenever it starts on one
of those galaxies, and ``{"delay_s": 0.2}`` slows each galaxy down so a test can kill a
worker mid-chunk, and ``{"transient_error_objids": [...]}`` raises a database
OperationalError the first time this process meets one of those galaxies (as a dropped
connection would), and ``{"fail_stages": ["features"]}`` makes every chunk of those
stages raise (a bug in a stage, for the workflow's failure tests), and
``{"slow_steps": {"gbm:lgz": 8}}`` sleeps that many seconds before that step of that
stage, reporting nothing (a model fit longer than a chunk's time limit), and
``{"slow_steps": {"cnn": 2}}`` before each of its steps, and ``{"boundary_pause_s": {"cnn": 10}}``
pauses that long when a run of that stage has ended, before its workflow moves on (so an
outage test stops a service exactly at the boundary), and ``{"shard_rewrite_pause_s": 0.5}``
holds each rewrite of an image-store shard on object storage between its read and its write. Unset (always, outside tests) it
does nothing.
"""

from __future__ import annotations

import json
import os
import signal
import time
from functools import lru_cache

_SEEN: set[int] = set()


@lru_cache(maxsize=1)
def _faults() -> dict:
    raw = os.environ.get("MORPHOMASS_FAULTS", "").strip()
    return json.loads(raw) if raw else {}


def before_item(objid: int) -> None:
    """Called by chunk bodies before each galaxy."""
    faults = _faults()
    if not faults:
        return
    if faults.get("delay_s"):
        time.sleep(float(faults["delay_s"]))
    if int(objid) in {int(o) for o in faults.get("crash_objids", [])}:
        os.kill(os.getpid(), signal.SIGKILL)
    if int(objid) in {int(o) for o in faults.get("transient_error_objids", [])} and int(objid) not in _SEEN:
        from django.db import OperationalError

        _SEEN.add(int(objid))
        raise OperationalError(f"injected: server closed the connection while preprocessing {objid}")


class InjectedFailure(RuntimeError):
    """The error ``fail_stages`` raises."""


def before_chunk(stage: str) -> None:
    """Called by the run engine before each chunk's body."""
    if stage in _faults().get("fail_stages", []):
        raise InjectedFailure(f"injected failure in the {stage} stage (MORPHOMASS_FAULTS)")


def before_step(stage: str, name: str) -> None:
    """Called by stage bodies before each step (a network, a model, an experiment, a chunk's role).

    ``slow_steps`` keys are ``"<stage>:<step>"`` (one step) or ``"<stage>"`` (each of its steps).
    """
    slow = _faults().get("slow_steps", {})
    delay = slow.get(f"{stage}:{name}", slow.get(stage))
    if delay:
        time.sleep(float(delay))


def at_boundary(stage: str) -> None:
    """Called when a workflow's stage has ended (recorded), before the workflow moves on."""
    pause = _faults().get("boundary_pause_s", {}).get(stage)
    if pause:
        time.sleep(float(pause))


def during_shard_rewrite() -> None:
    """Called by the object-storage image store between reading a shard and writing it back:
    ``{"shard_rewrite_pause_s": 0.5}`` holds it there, so two writers of one shard overlap (the lock's test)."""
    pause = _faults().get("shard_rewrite_pause_s")
    if pause:
        time.sleep(float(pause))
