"""The broker and the database going away under real workers and beat, at the default settings.

Each test runs a workflow on a private PostgreSQL and a private Redis (``tests/outage_rig.py``)
and takes one of them away: the broker SIGKILLed mid-stage (it keeps nothing on disk, so its
queued messages are lost), the database stopped for a minute mid-stage, and the database
stopped for a minute exactly at a stage boundary (a fault hook pauses the worker there). The
workflow must then finish by itself within ten minutes of the service's return, with every
galaxy preprocessed once, every feature vector stored once and every item counted once.
"""

from __future__ import annotations

import time

import pytest

from tests.outage_rig import OutageRig

# One pytest-xdist group for the three: they mostly wait on timers (the outage, the reaper's minute), so
# one worker takes them early while the others do the suite's work (tests/conftest.py orders them first).
pytestmark = [pytest.mark.services]

#: Ten minutes from the service's return to the workflow's success (the issue's bound).
RECOVERY_S = 600
OUTAGE_S = 60
SURVEY = "outage"


@pytest.fixture
def rig_for(tmp_path, small_bundle):
    rigs: list[OutageRig] = []

    def make(**options) -> OutageRig:
        rig = OutageRig(tmp_path / "rig", small_bundle, **options)
        rigs.append(rig)
        return rig.start(SURVEY)

    yield make
    for rig in rigs:
        rig.stop()


def _finishes_whole(rig: OutageRig, workflow: int, back: float) -> None:
    done = rig.wait_for_workflow(workflow, RECOVERY_S)
    assert done - back < RECOVERY_S
    whole = rig.missing_or_twice()
    assert whole == dict.fromkeys(whole, 0)
    assert rig.scalar("SELECT count(*) FROM catalogue_run WHERE status IN ('queued', 'running')") == 0


@pytest.mark.xdist_group("outages")
def test_a_broker_killed_mid_stage_loses_its_queued_messages_and_the_ledger_sends_them_again(rig_for):
    rig = rig_for(faults={"delay_s": 0.3})  # 50 galaxies a chunk: 15 s in a worker's hands
    workflow = rig.start_workflow(SURVEY, ["preprocess"])
    rig.wait_until(lambda: rig.running_chunks("preprocess"), 120, "a preprocess chunk in a worker's hands")
    queued = rig.scalar("SELECT count(*) FROM catalogue_runchunk WHERE state = 'queued'")
    assert queued >= 1  # its message was in the broker, which keeps nothing on disk
    rig.redis.kill()
    time.sleep(20)
    rig.redis.start()
    back = time.monotonic()
    _finishes_whole(rig, workflow, back)
    assert rig.scalar("SELECT max(sends) FROM catalogue_runchunk") >= 2  # the lost message was sent again


@pytest.mark.xdist_group("outages")
def test_a_database_stopped_for_a_minute_mid_stage_leaves_nothing_stuck(rig_for):
    rig = rig_for(faults={"delay_s": 0.3})
    workflow = rig.start_workflow(SURVEY, ["preprocess"])
    rig.wait_until(lambda: rig.running_chunks("preprocess"), 120, "a preprocess chunk in a worker's hands")
    rig.postgres.stop()
    time.sleep(OUTAGE_S)
    rig.postgres.start()
    back = time.monotonic()
    _finishes_whole(rig, workflow, back)


@pytest.mark.xdist_group("outages")
def test_a_database_stopped_for_a_minute_at_a_stage_boundary_moves_the_workflow_on_once_back(rig_for):
    # The worker that ends cnn pauses 15 s before starting features: the database goes in that pause.
    rig = rig_for(faults={"boundary_pause_s": {"cnn": 15}})
    workflow = rig.start_workflow(SURVEY, ["preprocess", "cnn", "features"])
    rig.wait_until(lambda: rig.stage_status(workflow, "cnn") == "succeeded", 480, "cnn to succeed", every=0.2)
    rig.postgres.stop()
    time.sleep(OUTAGE_S)
    rig.postgres.start()
    back = time.monotonic()
    assert rig.stage_status(workflow, "features") is None  # the boundary was lost to the outage ...
    _finishes_whole(rig, workflow, back)  # ... and the reaper's watch moved the workflow on
    assert rig.stage_status(workflow, "features") == "succeeded"
    assert rig.scalar("SELECT count(*) FROM catalogue_featurevector") > 0
