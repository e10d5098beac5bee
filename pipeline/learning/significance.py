"""Is one model's per-galaxy L1 lower than another's? The paper's two tests (its Sect. 4.3).

* A one-sided two-sample Kolmogorov-Smirnov test on the two sets of per-galaxy L1
  (scipy.stats.ks_2samp): a small p-value says the better model's L1 distribution lies
  to the left.
* A paired bootstrap of the difference of the mean L1 over the same test galaxies
  (scipy.stats.bootstrap, vectorised in batches so 100,000 resamples of a large test set
  stay within a bounded memory): its 95% interval and its p-value, (1 + k) / (1 + B) for
  k of B resamples in which the better model is not better: a bootstrap of B resamples
  cannot show a p below 1 / (1 + B), and a p of exactly 0 would claim it did.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

BOOTSTRAP_RESAMPLES = 100_000
#: Resamples drawn at once: bounds memory to about batch x n_galaxies x 8 bytes.
BOOTSTRAP_BATCH_ELEMENTS = 20_000_000


def compare_l1(l1_better: np.ndarray, l1_worse: np.ndarray, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict:
    """Both tests of "``l1_better`` is lower than ``l1_worse``", paired per galaxy.

    Galaxies without an L1 in either array (NaN) are left out of both tests and counted.
    """
    better, worse = np.asarray(l1_better, dtype=float), np.asarray(l1_worse, dtype=float)
    if better.shape != worse.shape:
        raise ValueError(f"paired L1 arrays differ in shape: {better.shape} and {worse.shape}")
    paired = np.isfinite(better) & np.isfinite(worse)
    better, worse = better[paired], worse[paired]
    if len(better) < 2:
        raise ValueError(f"{len(better)} galaxies with both L1 values: too few to compare")
    ks = stats.ks_2samp(better, worse, alternative="greater")
    gain = worse - better
    batch = max(1, min(resamples, BOOTSTRAP_BATCH_ELEMENTS // len(gain)))
    boot = stats.bootstrap(
        (gain,),
        np.mean,
        n_resamples=resamples,
        batch=batch,
        vectorized=True,
        method="percentile",
        confidence_level=0.95,
        random_state=np.random.default_rng(seed),
    )
    return {
        "n": int(len(gain)),
        "n_unpaired": int((~paired).sum()),
        "mean_l1_better": float(better.mean()),
        "mean_l1_worse": float(worse.mean()),
        "mean_l1_gain": float(gain.mean()),
        "ks_statistic": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
        "bootstrap_resamples": int(resamples),
        "bootstrap_ci95": [float(boot.confidence_interval.low), float(boot.confidence_interval.high)],
        "bootstrap_pvalue": float((1 + np.sum(boot.bootstrap_distribution <= 0.0)) / (1 + resamples)),
    }
