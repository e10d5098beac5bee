"""The GZ2 tree as data, checked against hand-computed trees."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import gz2

pytestmark = pytest.mark.smoke


def fractions(**answers: float) -> np.ndarray:
    vector = np.full(gz2.N_ANSWERS, np.nan)
    for answer_id, value in answers.items():
        vector[gz2.ANSWER_INDEX[answer_id]] = value
    return vector


def test_tree_has_37_answers_in_public_order():
    assert gz2.N_ANSWERS == 37
    assert gz2.ANSWER_IDS[:3] == ("a01", "a02", "a03")
    assert gz2.ANSWER_IDS[-1] == "a37"
    assert gz2.TASK_SLICES["t08"] == slice(18, 25)
    assert gz2.ANSWER_IDS[24] == "a38"  # dust lane closes task 8
    assert gz2.WEIGHTED_FRACTION_COLUMNS[24] == "t08_odd_feature_a38_dust_lane_weighted_fraction"
    assert gz2.column_name("a36") == "t11_arms_number_a36_more_than_4_weighted_fraction"
    assert gz2.column_name("a01") == "t01_smooth_or_features_a01_smooth_weighted_fraction"


def test_spiral_branch_multiplies_its_ancestors():
    # 70% features; of those 80% not edge-on; of those 90% spiral; of spirals 50% tight, 2 arms 60%.
    f = fractions(
        a01=0.25,
        a02=0.7,
        a03=0.05,
        a04=0.2,
        a05=0.8,
        a06=0.3,
        a07=0.7,
        a08=0.9,
        a09=0.1,
        a10=0.1,
        a11=0.4,
        a12=0.4,
        a13=0.1,
        a14=0.2,
        a15=0.8,
        a16=0.5,
        a17=0.4,
        a18=0.1,
        a19=0.5,
        a20=0.0,
        a21=0.0,
        a22=0.0,
        a23=0.0,
        a24=0.5,
        a38=0.0,
        a25=0.6,
        a26=0.1,
        a27=0.3,
        a28=0.5,
        a29=0.3,
        a30=0.2,
        a31=0.1,
        a32=0.6,
        a33=0.2,
        a34=0.1,
        a36=0.0,
        a37=0.0,
    )
    p = gz2.conditional_to_unconditional(f)
    at = gz2.ANSWER_INDEX
    assert p[at["a02"]] == pytest.approx(0.7)
    assert p[at["a05"]] == pytest.approx(0.7 * 0.8)
    assert p[at["a06"]] == pytest.approx(0.7 * 0.8 * 0.3)
    assert p[at["a08"]] == pytest.approx(0.7 * 0.8 * 0.9)
    assert p[at["a28"]] == pytest.approx(0.7 * 0.8 * 0.9 * 0.5)
    assert p[at["a32"]] == pytest.approx(0.7 * 0.8 * 0.9 * 0.6)
    assert p[at["a25"]] == pytest.approx(0.7 * 0.2 * 0.6)  # bulge shape only for edge-on disks
    assert p[at["a14"]] == pytest.approx((0.25 + 0.7) * 0.2)  # odd asked unless star/artifact
    assert p[at["a24"]] == pytest.approx(0.95 * 0.2 * 0.5)
    assert p[at["a16"]] == pytest.approx(0.25 * 0.5)  # roundness only for smooth galaxies


def test_smooth_galaxy_never_reaches_the_disk_tasks():
    f = fractions(a01=1.0, a02=0.0, a03=0.0, a14=0.0, a15=1.0, a16=0.2, a17=0.7, a18=0.1)
    p = gz2.conditional_to_unconditional(f)
    for task in ("t02", "t03", "t04", "t05", "t09", "t10", "t11", "t08"):
        assert np.all(p[gz2.TASK_SLICES[task]] == 0)
    assert p[gz2.ANSWER_INDEX["a17"]] == pytest.approx(0.7)


def test_round_trip_between_conditional_and_unconditional():
    rng = np.random.default_rng(4)
    cond = np.zeros((50, gz2.N_ANSWERS))
    for task in gz2.TASKS:
        sl = gz2.TASK_SLICES[task.id]
        cond[:, sl] = rng.dirichlet(np.ones(sl.stop - sl.start), size=50)
    uncond = gz2.conditional_to_unconditional(cond)
    np.testing.assert_allclose(gz2.unconditional_to_conditional(uncond), cond, atol=1e-12)
    # Each task's answers sum to the probability that it was asked.
    for task in gz2.TASKS:
        np.testing.assert_allclose(uncond[:, gz2.TASK_SLICES[task.id]].sum(axis=1), gz2.task_asked_probability(uncond, task))


def test_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match="37"):
        gz2.conditional_to_unconditional(np.ones(36))
