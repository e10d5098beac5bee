"""Recovery from the broker or the database going away, at the default settings.

For each fault, a fresh private PostgreSQL and Redis (``tests/outage_rig.py``), real cpu and gpu
workers and celery beat (the reaper every minute, a minute's resend and stall waits), a
simulated survey of ``--n`` galaxies and a ``test``-preset workflow started through
``run_pipeline --no-wait``; the service goes away mid-stage or exactly at the cnn -> features
boundary (a fault hook pauses the worker there), comes back, and the script times the seconds
from its return to the workflow's success, then checks that every galaxy, feature vector and
item was stored once. Prints one JSON object.

    .venv/bin/python benchmarks/outages.py                 # all seven faults (about 20 minutes)
    .venv/bin/python benchmarks/outages.py --only postgres-stopped-at-boundary
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.simulate.survey import simulate_survey  # noqa: E402
from tests.outage_rig import OutageRig  # noqa: E402

SURVEY = "outage"
BOUNDARY = ["preprocess", "cnn", "features"]


@dataclass(frozen=True)
class Fault:
    name: str
    service: str  # redis or postgres
    where: str  # mid-stage or boundary
    down_s: float  # 0: restarted at once
    appendonly: bool = False


FAULTS = (
    Fault("redis-killed-mid-stage", "redis", "mid-stage", 20),
    Fault("redis-killed-at-boundary", "redis", "boundary", 20),
    Fault("redis-aof-killed-at-boundary", "redis", "boundary", 20, appendonly=True),
    Fault("redis-aof-killed-mid-stage", "redis", "mid-stage", 20, appendonly=True),
    Fault("postgres-stopped-mid-stage", "postgres", "mid-stage", 60),
    Fault("postgres-stopped-at-boundary", "postgres", "boundary", 60),
    Fault("postgres-restarted-mid-chunk", "postgres", "mid-stage", 0),
)


def _take_away(rig: OutageRig, fault: Fault) -> None:
    if fault.service == "redis":
        rig.redis.kill()
        time.sleep(fault.down_s)
        rig.redis.start()
    else:
        rig.postgres.stop()
        time.sleep(fault.down_s)
        rig.postgres.start()


def measure(fault: Fault, bundle: Path, folder: Path) -> dict:
    faults = {"delay_s": 0.3} if fault.where == "mid-stage" else {"boundary_pause_s": {"cnn": 15}}
    rig = OutageRig(folder / fault.name, bundle, appendonly=fault.appendonly, faults=faults)
    try:
        rig.start(SURVEY)
        started = time.monotonic()
        if fault.where == "mid-stage":
            root = rig.start_workflow(SURVEY, ["preprocess"])
            rig.wait_until(lambda: rig.running_chunks("preprocess"), 120, "a chunk in a worker's hands")
        else:
            root = rig.start_workflow(SURVEY, BOUNDARY)
            rig.wait_until(lambda: rig.stage_status(root, "cnn") == "succeeded", 600, "cnn to succeed", every=0.2)
        _take_away(rig, fault)
        back = time.monotonic()
        done = rig.wait_for_workflow(root, 1800)
        whole = rig.missing_or_twice()
        return {
            "service": fault.service,
            "where": "mid-stage (preprocess)" if fault.where == "mid-stage" else "cnn -> features boundary",
            "down_s": fault.down_s,
            "redis_persistence": "AOF" if fault.appendonly else "none",
            "seconds_from_return_to_success": round(done - back, 1),
            "seconds_start_to_success": round(done - started, 1),
            "max_sends_of_a_chunk": rig.scalar("SELECT max(sends) FROM catalogue_runchunk"),
            "whole": all(v == 0 for v in whole.values()),
            "checks": whole,
        }
    except Exception as exc:  # one fault's failure is a result too
        return {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    finally:
        rig.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60, help="galaxies in the simulated survey")
    parser.add_argument("--only", choices=[f.name for f in FAULTS], action="append", help="run only these faults")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="morphomass-outages-"))
    bundle = folder / "bundle"
    simulate_survey(bundle, n=args.n, seed=11, workers=2)
    results = {}
    for fault in FAULTS:
        if args.only and fault.name not in args.only:
            continue
        results[fault.name] = measure(fault, bundle, folder)
        print(f"{fault.name}: {results[fault.name]}", file=sys.stderr, flush=True)
    print(json.dumps({"galaxies": args.n, "preset": "test", "cores": os.cpu_count(), "faults": results}, indent=2))


if __name__ == "__main__":
    main()
