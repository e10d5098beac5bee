"""The paper's experiments, each one call returning the rows of its table (test split).

1. ``single_band``: constant vs Lg + z vs g + morphology (Sect. 4.1);
2. ``ablation``: Table 1, leaving out one feature group at a time (luminosity features
   replaced by flux features when the distance is left out);
3. ``colour``: the g - i power law vs the g + i GBM vs g + i + morphology (Sect. 4.3, Fig. 7);
4. ``losses``: Table B.1, three methods each optimised on L1, L2 and RMSLE;
5. ``band_sets``: Fig. 8, the bands g; g,i; g,r,i; g,r,i,z; u,g,r,i,z with and without morphology;
6. ``significance``: gi_morph over gi and g_morph over lgz, by a one-sided KS test and a
   paired bootstrap of the mean L1;
7. ``half_data``: g + morphology trained on a random half of the training split;
8. ``colour_images`` (beyond the paper, where the survey has CNN4-on-colour features):
   Table 1 style, g + i + morphology with CNN4 on g (gi_morph), with CNN4 on the g image
   and the g - i map instead (gi_images), and with both, on the test galaxies that have i images.
   Fig. 8 gets gi_images as a third bar at g, i, and the significance tests the pair
   gi_images over gi_morph.

Experiments reuse the named models already fitted (``named``) where a row is one of them,
and the GBM hyper-parameters chosen for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from pipeline.learning.data import BAND_SETS, COLOUR_IMAGE_MODEL_GROUPS, MORPHOLOGY_MODEL_GROUPS, LearningData
from pipeline.learning.metrics import l1_per_galaxy
from pipeline.learning.named_models import CONSTANT, G_MORPH, GI, GI_IMAGES, GI_MORPH, LGZ, NAMED, POWERLAW_GI, ModelSpec
from pipeline.learning.regression import FittedModel, fit_model, score
from pipeline.learning.significance import compare_l1

EXPERIMENTS = ("single_band", "ablation", "colour", "losses", "band_sets", "significance", "half_data", "colour_images")
#: The feature group CNN4 on colour's features form (absent on a survey without i images).
COLOUR_GROUP = COLOUR_IMAGE_MODEL_GROUPS[-1]
#: Paired tests per morphology class need at least this many galaxies of the class.
MIN_CLASS_PAIRED = 10
#: Bootstrap resamples of each class's paired test (the overall test keeps the default).
CLASS_RESAMPLES = 20_000


@dataclass
class ExperimentRow:
    """One row of an experiment's table: a model scored on the test split."""

    experiment: str
    method: str
    feature_groups: list[str]
    loss: str
    metrics: dict
    per_class: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)


@dataclass
class ExperimentContext:
    data: LearningData
    named: dict[str, FittedModel]
    seed: int = 0
    #: Called with a short message before each model is fitted (progress, cancellation).
    on_step: Callable[[str], None] = lambda _message: None
    _test_l1: dict = field(default_factory=dict)

    def fit(self, spec: ModelSpec, train_rows: np.ndarray | None = None) -> FittedModel:
        self.on_step(f"fitting {spec.name}")
        base = self.named.get(GI_MORPH if spec.bands and spec.groups else G_MORPH if spec.groups else GI)
        params = base.params if base is not None and spec.method == "gbm" else {}
        return fit_model(
            spec, self.data, params=params, train_rows=train_rows, importance=False, uncertainty=False, seed=self.seed
        )

    @property
    def has_colour_images(self) -> bool:
        """Whether the survey has CNN4-on-colour features (i images) for gi_images."""
        return COLOUR_GROUP in self.data.groups

    def row(
        self, experiment: str, fitted: FittedModel, method: str | None = None, test_rows: np.ndarray | None = None, **details
    ) -> ExperimentRow:
        test = self.data.rows("test") if test_rows is None else test_rows
        metrics, per_class, l1 = score(fitted, self.data, test)
        if test_rows is None:
            self._test_l1[fitted.spec.name] = l1
        extra = {"n_features": len(fitted.features), "n_train": fitted.n_train}
        if fitted.selection:
            extra["selection"] = fitted.selection
        return ExperimentRow(
            experiment,
            method or fitted.spec.name,
            fitted.spec.label(),
            fitted.spec.loss,
            metrics,
            per_class,
            {**extra, **details},
        )

    def named_model(self, name: str) -> FittedModel:
        if name not in self.named:
            self.named[name] = self.fit(NAMED[name])
        return self.named[name]

    def test_l1(self, name: str) -> np.ndarray:
        if name not in self._test_l1:
            self.row("", self.named_model(name))
        return self._test_l1[name]


def single_band(ctx: ExperimentContext) -> list[ExperimentRow]:
    return [ctx.row("single_band", ctx.named_model(name)) for name in (CONSTANT, LGZ, G_MORPH)]


#: Table 1's rows: the groups kept (the distance-free image statistics are always kept).
ABLATION_ROWS = (
    ("all", ("cnn123", "cnn4", "luminosity", "distance")),
    ("without CNN1-3", ("cnn4", "luminosity", "distance")),
    ("without CNN4", ("cnn123", "luminosity", "distance")),
    ("without luminosity", ("cnn123", "cnn4", "distance")),
    ("without distance", ("cnn123", "cnn4", "luminosity")),
    ("without CNNs", ("luminosity", "distance")),
)


def ablation(ctx: ExperimentContext) -> list[ExperimentRow]:
    rows = []
    for label, kept in ABLATION_ROWS:
        groups = ["image", *kept]
        if "distance" not in kept and "luminosity" in kept:
            groups[groups.index("luminosity")] = "flux"  # a luminosity is a flux times the distance squared
        if set(groups) == set(MORPHOLOGY_MODEL_GROUPS):
            fitted = ctx.named_model(G_MORPH)
        else:
            fitted = ctx.fit(ModelSpec(f"ablation: {label}", "gbm", tuple(groups), select_top=50))
        rows.append(ctx.row("ablation", fitted, method=label, kept=list(kept)))
    return rows


def colour(ctx: ExperimentContext) -> list[ExperimentRow]:
    return [ctx.row("colour", ctx.named_model(name)) for name in (POWERLAW_GI, GI, GI_MORPH)]


def losses(ctx: ExperimentContext) -> list[ExperimentRow]:
    rows = []
    for name in (G_MORPH, POWERLAW_GI, GI_MORPH):
        for loss in ("l1", "l2", "rmsle"):
            if loss == "l1":
                fitted = ctx.named_model(name)
            else:
                fitted = ctx.fit(replace(NAMED[name], name=f"{name} ({loss})", loss=loss))
            rows.append(ctx.row("losses", fitted, method=name))
    return rows


def band_sets(ctx: ExperimentContext) -> list[ExperimentRow]:
    rows = []
    for bands in BAND_SETS:
        for morphology in (False, True):
            groups = MORPHOLOGY_MODEL_GROUPS if morphology else ()
            name = f"{bands}{' + morph' if morphology else ''}"
            spec = ModelSpec(name, "gbm", groups, bands=bands, select_top=50 if morphology else 0)
            rows.append(ctx.row("band_sets", ctx.fit(spec), bands=bands, morphology=morphology))
        if bands == "gi" and ctx.has_colour_images:
            rows.append(ctx.row("band_sets", ctx.named_model(GI_IMAGES), bands=bands, morphology=True, colour_images=True))
    return rows


#: (better, worse): the comparisons whose significance the paper reports, and CNN4 on colour's.
SIGNIFICANCE_PAIRS = ((GI_MORPH, GI), (G_MORPH, LGZ), (GI_IMAGES, GI_MORPH))


def significance(ctx: ExperimentContext) -> list[ExperimentRow]:
    rows = []
    test = ctx.data.rows("test")
    classes = ctx.data.morphology[test]
    for better, worse in SIGNIFICANCE_PAIRS:
        if any(not set(NAMED[name].groups) <= set(ctx.data.groups) for name in (better, worse)):
            continue  # a model this survey cannot have (gi_images without i images)
        l1_better, l1_worse = ctx.test_l1(better), ctx.test_l1(worse)
        details = compare_l1(l1_better, l1_worse, seed=ctx.seed)
        details["per_class_gain"] = {
            name: per_class_comparison(l1_better[hit], l1_worse[hit], ctx.seed)
            for name in dict.fromkeys(c for c in classes if c)
            for hit in [classes == name]
        }
        details["out_of_fold"] = out_of_fold_comparison(ctx, better, worse)
        row = ctx.row("significance", ctx.named_model(better), method=f"{better} over {worse}", **details)
        row.details["compared_with"] = worse
        rows.append(row)
    return rows


def per_class_comparison(l1_better: np.ndarray, l1_worse: np.ndarray, seed: int) -> dict:
    """One class's mean L1 gain, with the paired tests where it has :data:`MIN_CLASS_PAIRED` galaxies."""
    paired = np.isfinite(l1_better) & np.isfinite(l1_worse)
    gain = float(np.mean(l1_worse[paired] - l1_better[paired])) if paired.any() else None
    entry = {"n": int(paired.sum()), "mean_l1_gain": gain}
    if paired.sum() >= MIN_CLASS_PAIRED:
        tests = compare_l1(l1_better, l1_worse, resamples=CLASS_RESAMPLES, seed=seed)
        entry.update({k: tests[k] for k in ("ks_pvalue", "bootstrap_pvalue", "bootstrap_ci95")})
    return entry


def out_of_fold_comparison(ctx: ExperimentContext, better: str, worse: str) -> dict | None:
    """The same tests on the two models' out-of-fold predictions over train + validation.

    At the GBM level (the CNN features fixed), every training and validation galaxy is
    predicted by a refit that did not see it: some ten times the test split's galaxies,
    so the comparison has the power the test split alone lacks. None for models stored
    before out-of-fold predictions were kept.
    """
    a, b = (getattr(ctx.named_model(name), "oof", None) or {} for name in (better, worse))
    if not a or not b:
        return None
    shared, in_a, in_b = np.intersect1d(a["galaxy_ids"], b["galaxy_ids"], return_indices=True)
    position = {int(g): i for i, g in enumerate(ctx.data.galaxy_ids)}
    rows = np.array([position[int(g)] for g in shared], dtype=np.int64)
    target, error = ctx.data.target[rows], ctx.data.error[rows]
    l1_better = l1_per_galaxy(np.asarray(a["ml"])[in_a], target, error)
    l1_worse = l1_per_galaxy(np.asarray(b["ml"])[in_b], target, error)
    return {"n": len(rows), "split": "train + validation, out-of-fold", **compare_l1(l1_better, l1_worse, seed=ctx.seed)}


def half_data(ctx: ExperimentContext) -> list[ExperimentRow]:
    train = ctx.data.rows("train")
    half = np.sort(np.random.default_rng(ctx.seed).permutation(train)[: len(train) // 2])
    fitted = ctx.fit(replace(NAMED[G_MORPH], name=f"{G_MORPH} (half train)"), train_rows=half)
    return [ctx.row("half_data", ctx.named_model(G_MORPH), fraction=1.0), ctx.row("half_data", fitted, fraction=0.5)]


def colour_images(ctx: ExperimentContext) -> list[ExperimentRow]:
    """What CNN4 on the g image and g - i map adds to g + i + morphology, on the test galaxies with i images."""
    if not ctx.has_colour_images:
        return []
    test = ctx.data.rows("test")
    test = test[ctx.data.covered((COLOUR_GROUP,), test)]
    both = ModelSpec("gi + both CNN4s", "gbm", (*COLOUR_IMAGE_MODEL_GROUPS, "cnn4"), bands="gi", select_top=50)
    models = (
        (f"CNN4 on g ({GI_MORPH})", ctx.named_model(GI_MORPH), ["cnn4"]),
        (f"CNN4 on g and g - i ({GI_IMAGES})", ctx.named_model(GI_IMAGES), [COLOUR_GROUP]),
        ("both CNN4s", ctx.fit(both), ["cnn4", COLOUR_GROUP]),
    )
    return [ctx.row("colour_images", fitted, method=label, test_rows=test, cnn4=kept) for label, fitted, kept in models]


RUNNERS: dict[str, Callable[[ExperimentContext], list[ExperimentRow]]] = {
    "single_band": single_band,
    "ablation": ablation,
    "colour": colour,
    "losses": losses,
    "band_sets": band_sets,
    "significance": significance,
    "half_data": half_data,
    "colour_images": colour_images,
}


def run_experiment(name: str, ctx: ExperimentContext) -> list[ExperimentRow]:
    """The rows of one experiment (see the module docstring for the list)."""
    if name not in RUNNERS:
        raise ValueError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    return RUNNERS[name](ctx)
