"""python manage.py run_pipeline --survey NAME --preset test|fast|paper [--stages preprocess,cnn,...] [--models FROM]

The one CLI entry to the pipeline. It hands the survey, stages, model set, preset and
``--force`` to the one start path (:func:`catalogue.orchestration.start.start`): several
stages run as one workflow (a parent run whose stages the workers start one after another),
one stage alone. This command only starts the work and shows it: a progress bar per stage
on a terminal (a line per stage elsewhere), then a summary.

* ``--no-wait`` starts the workflow and returns; ``--attach RUN`` shows a running (or
  finished) run again, and Ctrl-C while attached detaches without stopping the work.
* ``--cancel RUN`` cancels a run and the stage it is in.
* ``--models FROM`` applies a trained model set (``survey@run``, or a training survey's
  name: its current set, else its newest) to the survey: preprocess, features and predict,
  nothing trained.
* ``--models FROM --adapt [--targets N]`` also adapts the set to the survey's own M/L targets
  (N of its train and validation galaxies, default all): a new set, ``<survey>@<run>``,
  "FROM adapted to the survey", measured on its galaxies it was not adapted on, predicts the catalogue.
* Run the same command again after a failure or a cancellation and it continues from the
  first stage that did not succeed: stages that succeeded with the same inputs are
  reused; ``--force`` redoes everything.

Without a broker (the embedded demo) the stages run in this process, and Ctrl-C cancels.
"""

from __future__ import annotations

import json
import logging
import sys

from django.core.management.base import BaseCommand, CommandError

from catalogue import registry, selectors
from catalogue.celery import app
from catalogue.console import RunWatcher, stage_outcome, summary
from catalogue.models import Run, Survey
from catalogue.orchestration.start import start
from catalogue.services import runs
from pipeline.learning.named_models import CATALOGUE_MODEL
from pipeline.presets import PRESETS


def adapted_summary(model_set) -> str:
    """One line of what adapting did to the catalogue's model: held-out L1 as it was and adapted."""
    lineage, metrics = model_set.lineage, model_set.metrics.get(CATALOGUE_MODEL, {})
    targets = lineage.get("targets", {})
    text = f"from {lineage.get('adapted_from')} on {targets.get('adaptation')} targets"
    as_is, adapted = metrics.get("as_is", {}).get("test", {}).get("l1"), metrics.get("test", {}).get("l1")
    if as_is is not None and adapted is not None:
        text += (
            f"; {CATALOGUE_MODEL} L1 on {targets.get('held_out')} held-out galaxies: {as_is:.2f} as it was, "
            f"{adapted:.2f} adapted ({metrics.get('method')})"
        )
    return text


class Command(BaseCommand):
    help = "Run pipeline stages on a survey as one workflow, showing each stage's progress."

    def add_arguments(self, parser):
        parser.add_argument("--survey", help="the survey's name (as given to ingest_survey)")
        parser.add_argument("--preset", choices=sorted(PRESETS), default="fast")
        parser.add_argument(
            "--stages",
            help=f"comma-separated, of: {', '.join(registry.stage_names())} "
            f"(default: all; with --models: {', '.join(registry.apply_stages())})",
        )
        parser.add_argument(
            "--models",
            metavar="FROM",
            help="apply this model set instead of training: survey@run, or a training survey's name (its current set)",
        )
        parser.add_argument(
            "--adapt",
            action="store_true",
            help="with --models: adapt the set to this survey's M/L targets (another instrument) and predict with the result",
        )
        parser.add_argument(
            "--targets",
            type=int,
            metavar="N",
            help="with --adapt: how many of the survey's train and validation targets to adapt on (default: all)",
        )
        parser.add_argument("--force", action="store_true", help="redo every stage, even those already done with the same inputs")
        parser.add_argument("--no-wait", action="store_true", help="start the workflow on the workers and return at once")
        parser.add_argument("--attach", type=int, metavar="RUN", help="show a run started earlier until it ends")
        parser.add_argument("--cancel", type=int, metavar="RUN", help="cancel a run (and the stage it is in)")
        parser.add_argument("--json", action="store_true", help="print the summary as JSON")
        parser.add_argument("--timeout", type=float, default=7 * 24 * 3600, help="seconds to wait while attached")

    def handle(self, *_args, **opts):
        if opts["verbosity"] < 2:  # chunk and worker log lines stay out of the progress display
            for name in ("catalogue", "pipeline", "celery"):
                logging.getLogger(name).setLevel(logging.WARNING)
        self.progress_out = getattr(self.stderr, "_out", sys.stderr)
        if opts["cancel"] is not None:
            return self._cancel(opts["cancel"])
        if opts["attach"] is not None:
            return self._show(self._run(opts["attach"]), opts)
        survey = self._survey(opts["survey"])
        model_set = None
        if opts["models"] is not None:
            try:
                model_set = selectors.resolve_model_set(opts["models"])
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
        stages = [s.strip() for s in (opts["stages"] or "").split(",") if s.strip()]
        unknown = [s for s in stages if s not in registry.stage_names()]
        if unknown or (opts["stages"] is not None and not stages):
            raise CommandError(
                f"unknown stage(s) {', '.join(unknown) or '(none given)'}; available: {', '.join(registry.stage_names())}"
            )
        eager = app.conf.task_always_eager
        if opts["no_wait"] and eager:
            raise CommandError(
                "--no-wait needs workers: set CELERY_BROKER_URL and start them (see docs/deployment.md); "
                "without a broker the stages run in this process"
            )
        watcher = RunWatcher(self.progress_out)
        if eager:
            runs.progress_listeners.append(watcher.follow)
        try:
            workflow = start(
                survey,
                stages,
                model_set=model_set,
                adapt=opts["adapt"],
                targets=opts["targets"],
                preset_name=opts["preset"],
                force=opts["force"],
            )
        except runs.RunConflict as exc:
            raise CommandError(f"{exc} (follow it with --attach {exc.active.pk})") from exc
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        except KeyboardInterrupt:
            self._interrupted_in_process(watcher, survey)
        except Exception:  # in-process: the stage's error has already failed the workflow; show it
            if watcher.root_id is None:
                raise
            workflow = selectors.run_by_id(watcher.root_id)
        finally:
            if eager:
                runs.progress_listeners.remove(watcher.follow)
        if opts["no_wait"]:
            what = ", ".join(workflow.config.get("stages", [workflow.stage]))
            self.stdout.write(
                f"{workflow.stage} run #{workflow.pk} started on the workers: {what}\n"
                f"follow it:  python manage.py run_pipeline --attach {workflow.pk}\n"
                f"cancel it:  python manage.py run_pipeline --cancel {workflow.pk}"
            )
            return
        watcher.root_id = workflow.pk
        return self._show(workflow, opts, watcher)

    def _show(self, run: Run, opts: dict, watcher: RunWatcher | None = None) -> None:
        watcher = watcher or RunWatcher(self.progress_out, run.pk)
        try:
            run = watcher.wait(opts["timeout"])
        except KeyboardInterrupt:
            raise CommandError(
                f"detached; run #{run.pk} goes on. Attach again: python manage.py run_pipeline "
                f"--attach {run.pk}, or stop it: --cancel {run.pk}"
            ) from None
        except TimeoutError as exc:
            raise CommandError(str(exc)) from exc
        if opts["json"]:
            self.stdout.write(json.dumps(summary(run), indent=2))
        else:
            self._print_summary(run)
        if run.status != Run.Status.SUCCEEDED:
            hint = " Run the same command again to continue from there." if run.stage == registry.WORKFLOW else ""
            raise CommandError(f"run #{run.pk} {run.status}: {run.message}.{hint}")

    def _print_summary(self, root: Run) -> None:
        title = f"{root.stage} #{root.pk} on survey {root.survey.name if root.survey else '-'} ({root.preset}): {root.status}"
        self.stdout.write(title)
        if root.config.get("model_set"):
            applied = selectors.model_set_by_id(root.config["model_set"])
            self.stdout.write(f"  applying model set {applied.name if applied else '#' + str(root.config['model_set'])}")
        adapted = selectors.adapted_set_of_workflow(root) if root.stage == registry.WORKFLOW else None
        if adapted is not None:
            self.stdout.write(f"  adapted set {adapted.name} ({adapted_summary(adapted)})")
        for stage, run, reused in selectors.workflow_stages(root):
            if run is None:
                self.stdout.write(f"  {stage:<12}not started")
            elif reused:
                self.stdout.write(f"  {stage:<12}reused run #{run.pk}")
            else:
                self.stdout.write(f"  {stage:<12}{run.status} (run #{run.pk}): {stage_outcome(run)}")
        if root.status == Run.Status.FAILED and root.error:
            self.stderr.write("error:\n" + root.error[-3000:])

    def _interrupted_in_process(self, watcher: RunWatcher, survey: Survey) -> None:
        workflow = selectors.run_by_id(watcher.root_id) if watcher.root_id else None
        workflow = workflow or runs.active_root(survey)
        if workflow is not None:
            runs.cancel_run(workflow)
        raise CommandError(
            "interrupted: the workflow was cancelled; run the same command again to continue from the stage it was in"
        )

    def _cancel(self, run_id: int) -> None:
        run = self._run(run_id)
        if not runs.cancel_run(run):
            raise CommandError(f"run #{run.pk} had already ended ({run.status})")
        self.stdout.write(f"run #{run.pk} cancelled")

    def _run(self, run_id: int) -> Run:
        run = selectors.run_by_id(run_id)
        if run is None:
            raise CommandError(f"no run #{run_id}")
        return run

    def _survey(self, name: str | None) -> Survey:
        if not name:
            raise CommandError("--survey is required (or --attach RUN / --cancel RUN)")
        survey = selectors.survey_named(name)
        if survey is None:
            known = ", ".join(selectors.survey_names()) or "none yet"
            raise CommandError(f"no survey named {name!r} (surveys: {known}); ingest it first with ingest_survey")
        return survey
