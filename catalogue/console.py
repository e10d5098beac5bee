"""What the commands print while a run goes on: one line or bar per stage, then a summary.

On a terminal each stage gets a progress bar; anywhere else (a log file, CI, a pipe) each
stage prints a line when it starts, a progress line at most every
:data:`PLAIN_PROGRESS_INTERVAL_S`, and a line when it ends: no carriage returns or other
escape codes. The same :class:`RunWatcher` is driven by polling while workers do the work,
or by :data:`catalogue.services.runs.progress_listeners` when Celery runs the stages in
this very process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TextIO

from tqdm import tqdm

from catalogue import registry
from catalogue.models import Run
from catalogue.selectors import chunk_failures, workflow_stages

#: Seconds between two progress lines of one stage when the output is not a terminal.
PLAIN_PROGRESS_INTERVAL_S = 30.0
#: Seconds between two looks at the database.
POLL_INTERVAL_S = 0.5
BAR_FORMAT = "{desc:<12}{percentage:3.0f}%|{bar:24}| {elapsed}{postfix}"


@dataclass
class _StageView:
    stage: str
    run_id: int | None = None
    reused: bool = False
    ended: bool = False
    bar: tqdm | None = None
    last_line: float = 0.0


class RunWatcher:
    """Shows a run (a workflow's stages, or one stage) on ``out`` as it progresses."""

    def __init__(self, out: TextIO, root_id: int | None = None, *, tty: bool | None = None):
        self.out = out
        self.root_id = root_id
        self.tty = out.isatty() if tty is None else tty
        self.views: dict[str, _StageView] = {}
        self._last_poll = 0.0

    def follow(self, run_id: int) -> None:
        """A progress listener: learn the root from the first run reported, then poll (throttled)."""
        if self.root_id is None:
            run = Run.objects.filter(pk=run_id).only("parent_id").first()
            self.root_id = (run.parent_id or run_id) if run else None
        if time.monotonic() - self._last_poll >= POLL_INTERVAL_S:
            self.poll()

    def poll(self) -> Run | None:
        """Look at the run once and update the display; returns the root run (None before one is known)."""
        self._last_poll = time.monotonic()
        if self.root_id is None:
            return None
        root = Run.objects.get(pk=self.root_id)
        for stage, run, reused in workflow_stages(root):
            view = self.views.setdefault(stage, _StageView(stage))
            if run is not None and view.run_id != run.pk:  # a first run, or a stage started again
                self._close(view)
                view.run_id, view.reused, view.ended = run.pk, reused, False
                self._started(view, run)
            if run is not None and not view.ended:
                self._progress(view, run)
        if root.status in Run.TERMINAL:
            for view in self.views.values():
                self._close(view)
        return root

    def wait(self, timeout: float) -> Run:
        """Poll until the root run ends; raises TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            root = self.poll()
            if root is not None and root.status in Run.TERMINAL:
                return root
            if time.monotonic() > deadline:
                raise TimeoutError(f"run #{self.root_id} not finished after {timeout:.0f} s")
            time.sleep(POLL_INTERVAL_S)

    # --- display ------------------------------------------------------------------
    def _started(self, view: _StageView, run: Run) -> None:
        if view.reused:
            self._line(f"{view.stage:<12}up to date: reusing run #{run.pk} (same preset, galaxies and inputs)")
            view.ended = True
            return
        self._line(f"{view.stage:<12}started: run #{run.pk}, {run.items_total} {_unit(run.stage)}")
        if self.tty:
            view.bar = tqdm(total=100, desc=view.stage, bar_format=BAR_FORMAT, file=self.out, leave=True, dynamic_ncols=True)
        view.last_line = time.monotonic()

    def _progress(self, view: _StageView, run: Run) -> None:
        percent = round(100 * (1.0 if run.status == Run.Status.SUCCEEDED else run.progress), 1)
        if view.bar is not None:
            view.bar.n = percent
            view.bar.set_postfix_str(run.message[:60], refresh=False)
            view.bar.refresh()
        elif run.status in Run.ACTIVE and time.monotonic() - view.last_line >= PLAIN_PROGRESS_INTERVAL_S:
            self._line(f"{view.stage:<12}{percent:3.0f}%  {run.message[:100]}")
            view.last_line = time.monotonic()
        if run.status in Run.TERMINAL:
            self._close(view)
            self._line(f"{view.stage:<12}{run.status}: {stage_outcome(run)}")
            view.ended = True

    def _close(self, view: _StageView) -> None:
        if view.bar is not None:
            view.bar.close()
            view.bar = None

    def _line(self, text: str) -> None:
        if self.tty:
            tqdm.write(text, file=self.out)
        else:
            self.out.write(text + "\n")
            self.out.flush()


def stage_outcome(run: Run) -> str:
    """'1995 done, 5 failed of 2000 galaxies in 45 s: <message>'."""
    seconds = f" in {run.duration_s:.0f} s" if run.duration_s is not None else ""
    text = f"{run.items_done} done, {run.items_failed} failed of {run.items_total} {_unit(run.stage)}{seconds}"
    skipped = run.result.get("skipped") or {}
    if skipped:  # a predict run on a survey lacking some model's inputs
        reasons = {}
        for name, reason in skipped.items():
            reasons.setdefault(reason, []).append(name)
        text += "; skipped " + "; ".join(f"{', '.join(names)} ({reason})" for reason, names in reasons.items())
    return f"{text}: {run.message}" if run.message and run.status != Run.Status.SUCCEEDED else text


def summary(root: Run) -> dict:
    """The run and its stages as JSON-ready data."""
    stages = {}
    for stage, run, reused in workflow_stages(root):
        if run is None:
            stages[stage] = {"status": "not started"}
            continue
        stages[stage] = {
            "run": run.pk,
            "status": run.status,
            "reused": reused,
            "total": run.items_total,
            "done": run.items_done,
            "failed": run.items_failed,
            "seconds": run.duration_s,
            "message": run.message,
            "failures": run.result.get("failures", []),
            "chunk_failures": chunk_failures(run),
            **{key: run.result[key] for key in ("model_set", "skipped", "flagged") if key in run.result},
        }
    return {
        "run": root.pk,
        "survey": root.survey.name if root.survey else None,
        "preset": root.preset,
        "status": root.status,
        "message": root.message,
        "stages": stages,
    }


class PlainProgress:
    """tqdm's ``update``/``close`` for output that is not a terminal: a line at most every
    :data:`PLAIN_PROGRESS_INTERVAL_S`, and one at the end."""

    def __init__(self, total: int, desc: str, unit: str, out: TextIO):
        self.total, self.desc, self.unit, self.out = total, desc, unit, out
        self.n, self._started, self._last = 0, time.monotonic(), time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._last >= PLAIN_PROGRESS_INTERVAL_S:
            self._last = time.monotonic()
            self.out.write(f"{self.desc:<11} {self.n}/{self.total} {self.unit}\n")
            self.out.flush()

    def close(self) -> None:
        self.out.write(f"{self.desc:<11} {self.n}/{self.total} {self.unit} in {time.monotonic() - self._started:.0f} s\n")
        self.out.flush()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def progress_bar(total: int, desc: str, unit: str, out: TextIO, *, leave: bool = True) -> tqdm | PlainProgress:
    """A tqdm bar on a terminal, plain lines elsewhere (no carriage returns in logs)."""
    if out.isatty():
        return tqdm(total=total, desc=desc, unit=unit, file=out, leave=leave)
    return PlainProgress(total, desc, unit, out)


def _unit(stage: str) -> str:
    """What a run's items are (the registry's unit; "stages" for a workflow)."""
    return registry.stage(stage).unit if stage in registry.stage_names() else "stages"
