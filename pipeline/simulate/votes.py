"""Galaxy Zoo 2 votes for synthetic galaxies, walked through the tree of ``pipeline.gz2``.

Each volunteer answers T01; the ones who gave an answer that leads to a task answer it,
and so on down the tree, so per-task vote counts and "task never asked" (NaN) come out
as in the real catalogue. Ideal answer probabilities come from the true morphology,
blurred by *visibility*: detail is missed on galaxies that are small compared with the
PSF or faint, so distant spirals drift towards "smooth" and lose their arms.
"""

from __future__ import annotations

import numpy as np

from pipeline import gz2


def _soft_bins(value: float, edges: list[float], width: float) -> np.ndarray:
    """Soft one-hot of ``value`` over len(edges)+1 bins (volunteers disagree near edges)."""
    centres = np.concatenate([[edges[0] - width], (np.array(edges[:-1]) + np.array(edges[1:])) / 2, [edges[-1] + width]])
    weights = np.exp(-0.5 * ((value - centres) / width) ** 2) + 1e-3
    return weights / weights.sum()


def visibility(p: dict) -> float:
    """0..1: how well volunteers can see structure (angular size vs PSF, brightness)."""
    size_ratio = p["d25_arcmin"] * 60 / p["psf_fwhm_g"]
    resolved = 1 / (1 + np.exp(-(np.log10(size_ratio) - 1.3) / 0.12))
    bright = 1 / (1 + np.exp((p["mag_r_true"] - 16.8) / 0.5))
    return float(resolved * bright)


def ideal_fractions(p: dict) -> np.ndarray:
    """Per-task answer probabilities (conditional, 37-vector) for a galaxy's true morphology."""
    cls = p["class"]
    vis = visibility(p)
    out = np.zeros(gz2.N_ANSWERS)

    def put(task: str, probs) -> None:
        probs = np.asarray(probs, dtype=float)
        out[gz2.TASK_SLICES[task]] = probs / probs.sum()

    featured = {"elliptical": 0.08, "lenticular": 0.35, "spiral": 0.88, "irregular": 0.7, "merger": 0.65}[cls]
    featured = vis * featured + (1 - vis) * min(featured, 0.3)
    put("t01", [1 - featured - 0.01, featured, 0.01])
    edge_on = 1 / (1 + np.exp(-(p["inclination_deg"] - 74) / 3)) if cls in {"spiral", "lenticular", "merger"} else 0.03
    put("t02", [edge_on, 1 - edge_on])
    bar = 0.1 + 0.75 * vis if p["barred"] else 0.06
    put("t03", [bar, 1 - bar])
    arms_seen = vis * (1 - edge_on) if p["n_arms"] > 0 else 0.0
    spiral = 0.08 + 0.85 * arms_seen
    put("t04", [spiral, 1 - spiral])
    put("t05", _soft_bins(p["bulge_frac"], [0.05, 0.2, 0.5], 0.08))
    odd = {"irregular": 0.75, "merger": 0.85}.get(cls, 0.5 if p["dust_lane"] else 0.1)
    put("t06", [odd, 1 - odd])
    q = p["q_bulge"] if cls == "elliptical" else p["q_disk"]
    put("t07", _soft_bins(q, [0.5, 0.85], 0.1)[::-1])
    put(
        "t08",
        [
            0.05,
            0.03,
            0.1 + 0.3 * (cls == "merger"),
            0.05 + 0.7 * (cls == "irregular"),
            0.05,
            0.05 + 0.75 * (cls == "merger"),
            0.05 + 0.8 * p["dust_lane"],
        ],
    )
    bulge_shape = [0.8, 0.1, 0.1] if p["bulge_frac"] > 0.15 else [0.2, 0.05, 0.75]
    put("t09", bulge_shape)
    winding = {"tight": [0.75, 0.2, 0.05], "medium": [0.2, 0.6, 0.2], "loose": [0.05, 0.25, 0.7]}.get(p["winding"], [1, 1, 1])
    put("t10", winding)
    arms = np.full(6, 0.02)
    if p["n_arms"] > 0:
        arms[min(int(p["n_arms"]), 5) - 1] = 0.75
    arms[5] = 0.1 + 0.5 * (1 - vis)  # can't tell
    put("t11", arms)
    return out


def simulate_votes(p: dict, rng: np.random.Generator, volunteers: int | None = None) -> np.ndarray:
    """Weighted vote fractions (37-vector, NaN where a task was never reached)."""
    probs = ideal_fractions(p)
    n_volunteers = volunteers or int(rng.integers(25, 60))
    counts = np.zeros(gz2.N_ANSWERS)
    fractions = np.full(gz2.N_ANSWERS, np.nan)
    for task in gz2.TASKS:
        reached = n_volunteers if not task.asked_after else int(sum(counts[gz2.ANSWER_INDEX[a]] for a in task.asked_after))
        if reached == 0:
            continue
        sl = gz2.TASK_SLICES[task.id]
        task_counts = rng.multinomial(reached, probs[sl])
        counts[sl] = task_counts
        fractions[sl] = task_counts / reached
    return fractions
