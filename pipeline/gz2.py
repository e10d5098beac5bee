"""The Galaxy Zoo 2 decision tree, written once as data (Willett et al. 2013).

Every index, column name and "probability that a task was asked" is derived from
:data:`TASKS`, so the CSV reader, the synthetic vote generator, the Keras normalisation
layer and the plots cannot disagree about the tree.

A task is asked when any one of its ``asked_after`` answers was given (an empty tuple means
always). The unconditional probability of an answer is its vote fraction times the
probability that its task was asked, which is the sum of the unconditional probabilities of
the answers that lead to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Task:
    """One GZ2 question: its answers (public ids and slugs) and what leads to it."""

    id: str
    slug: str
    answers: tuple[tuple[str, str], ...]  # (answer id like "a01", slug like "smooth")
    asked_after: tuple[str, ...] = ()  # answer ids; any one of them leads here


TASKS: tuple[Task, ...] = (
    Task("t01", "smooth_or_features", (("a01", "smooth"), ("a02", "features_or_disk"), ("a03", "star_or_artifact"))),
    Task("t02", "edgeon", (("a04", "yes"), ("a05", "no")), ("a02",)),
    Task("t03", "bar", (("a06", "bar"), ("a07", "no_bar")), ("a05",)),
    Task("t04", "spiral", (("a08", "spiral"), ("a09", "no_spiral")), ("a05",)),
    Task(
        "t05",
        "bulge_prominence",
        (("a10", "no_bulge"), ("a11", "just_noticeable"), ("a12", "obvious"), ("a13", "dominant")),
        ("a05",),
    ),
    Task("t06", "odd", (("a14", "yes"), ("a15", "no")), ("a01", "a02")),
    Task("t07", "rounded", (("a16", "completely_round"), ("a17", "in_between"), ("a18", "cigar_shaped")), ("a01",)),
    Task(
        "t08",
        "odd_feature",
        (
            ("a19", "ring"),
            ("a20", "lens_or_arc"),
            ("a21", "disturbed"),
            ("a22", "irregular"),
            ("a23", "other"),
            ("a24", "merger"),
            ("a38", "dust_lane"),
        ),
        ("a14",),
    ),
    Task("t09", "bulge_shape", (("a25", "rounded"), ("a26", "boxy"), ("a27", "no_bulge")), ("a04",)),
    Task("t10", "arms_winding", (("a28", "tight"), ("a29", "medium"), ("a30", "loose")), ("a08",)),
    Task(
        "t11",
        "arms_number",
        (("a31", "1"), ("a32", "2"), ("a33", "3"), ("a34", "4"), ("a36", "more_than_4"), ("a37", "cant_tell")),
        ("a08",),
    ),
)

ANSWER_IDS: tuple[str, ...] = tuple(a for t in TASKS for a, _ in t.answers)
N_ANSWERS = len(ANSWER_IDS)  # 37
ANSWER_INDEX: dict[str, int] = {a: i for i, a in enumerate(ANSWER_IDS)}
TASK_OF_ANSWER: dict[str, str] = {a: t.id for t in TASKS for a, _ in t.answers}
TASK_BY_ID: dict[str, Task] = {t.id: t for t in TASKS}

#: Column index ranges of each task in the 37-vector.
TASK_SLICES: dict[str, slice] = {}
_start = 0
for _task in TASKS:
    TASK_SLICES[_task.id] = slice(_start, _start + len(_task.answers))
    _start += len(_task.answers)
del _start, _task


def column_name(answer_id: str, suffix: str = "weighted_fraction") -> str:
    """Public zoo2MainSpecz column name, e.g. ``t01_smooth_or_features_a01_smooth_weighted_fraction``."""
    task = TASK_BY_ID[TASK_OF_ANSWER[answer_id]]
    slug = dict(task.answers)[answer_id]
    return f"{task.id}_{task.slug}_{answer_id}_{slug}_{suffix}"


WEIGHTED_FRACTION_COLUMNS: tuple[str, ...] = tuple(column_name(a) for a in ANSWER_IDS)


def short_name(answer_id: str) -> str:
    """A readable label for plots and feature names, e.g. ``t04_spiral:spiral``."""
    task = TASK_BY_ID[TASK_OF_ANSWER[answer_id]]
    return f"{task.id}_{task.slug}:{dict(task.answers)[answer_id]}"


def _check_fraction_matrix(fractions: np.ndarray) -> np.ndarray:
    array = np.asarray(fractions, dtype=float)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != N_ANSWERS:
        raise ValueError(f"expected an (N, {N_ANSWERS}) array of GZ2 fractions, got shape {np.shape(fractions)}")
    return array


def conditional_to_unconditional(fractions: np.ndarray | Sequence[float]) -> np.ndarray:
    """Convert vote fractions (conditional on each task) to unconditional probabilities.

    Parameters
    ----------
    fractions : array, shape (N, 37) or (37,)
        Weighted vote fractions in :data:`ANSWER_IDS` order. NaN (a task nobody was asked)
        counts as 0.

    Returns
    -------
    array of the same shape: P(answer) = fraction x P(its task was asked).
    """
    single = np.ndim(fractions) == 1
    cond = np.nan_to_num(_check_fraction_matrix(fractions), nan=0.0)
    uncond = np.zeros_like(cond)
    for task in TASKS:  # TASKS is in topological order: parents come first
        asked = task_asked_probability(uncond, task)
        uncond[:, TASK_SLICES[task.id]] = cond[:, TASK_SLICES[task.id]] * asked[:, None]
    return uncond[0] if single else uncond


def task_asked_probability(unconditional: np.ndarray, task: Task) -> np.ndarray:
    """P(task asked) per row, from the unconditional probabilities of its parent answers."""
    if not task.asked_after:
        return np.ones(unconditional.shape[0])
    return sum(unconditional[:, ANSWER_INDEX[a]] for a in task.asked_after)


def unconditional_to_conditional(probabilities: np.ndarray | Sequence[float]) -> np.ndarray:
    """Invert :func:`conditional_to_unconditional`; tasks never asked give NaN fractions."""
    single = np.ndim(probabilities) == 1
    uncond = _check_fraction_matrix(probabilities)
    cond = np.full_like(uncond, np.nan)
    for task in TASKS:
        asked = task_asked_probability(uncond, task)
        block = uncond[:, TASK_SLICES[task.id]]
        with np.errstate(invalid="ignore", divide="ignore"):
            cond[:, TASK_SLICES[task.id]] = np.where(asked[:, None] > 0, block / asked[:, None], np.nan)
    return cond[0] if single else cond
