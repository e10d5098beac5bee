"""The paper's metrics and morphology classes, against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import gz2
from pipeline.learning.metrics import l1_per_galaxy, metrics_by_class, ml_metrics, morphology_class

pytestmark = pytest.mark.smoke


def test_metrics_by_hand():
    target = np.array([2.0, 4.0, 1.0, 10.0])
    error = np.array([0.5, 0.01, 0.2, 1.0])  # 0.01 < 5% of 4.0: floored to 0.2
    predicted = np.array([3.0, 4.4, 1.0, 10.0**1.2])
    # |p - t| / e': 1/0.5 = 2, 0.4/0.2 = 2, 0, (15.849 - 10)/1 = 5.849
    per_galaxy = l1_per_galaxy(predicted, target, error)
    np.testing.assert_allclose(per_galaxy, [2.0, 2.0, 0.0, 5.8489], atol=1e-4)
    m = ml_metrics(predicted, target, error)
    assert m["l1"] == pytest.approx((2 + 2 + 0 + 5.8489) / 4, abs=1e-4)
    assert m["l2"] == pytest.approx(np.sqrt((4 + 4 + 0 + 5.8489**2) / 4), abs=1e-4)
    # log10(p/t): 0.17609, 0.04139, 0, 0.2
    assert m["rmsle"] == pytest.approx(np.sqrt((0.17609**2 + 0.04139**2 + 0.2**2) / 4), abs=1e-5)
    assert m["median_l1"] == pytest.approx(2.0)
    assert m["within_015_dex"] == pytest.approx(0.5)  # 0.041 and 0 dex are within; 0.176 and 0.2 are not
    assert m["n"] == 4


def test_metrics_refuse_what_they_cannot_measure():
    with pytest.raises(ValueError, match="differ in length"):
        ml_metrics([1.0, 2.0], [1.0], [0.1])
    with pytest.raises(ValueError, match="no galaxies"):
        ml_metrics([], [], [])
    with pytest.raises(ValueError, match="must be positive"):
        ml_metrics([-1.0], [1.0], [0.1])


def probabilities(**answers) -> np.ndarray:
    row = np.zeros(gz2.N_ANSWERS)
    for answer, p in answers.items():
        row[gz2.ANSWER_INDEX[answer]] = p
    return row


def test_morphology_classes_follow_the_papers_thresholds_in_order():
    rows = np.stack(
        [
            probabilities(a22=0.25, a04=0.9, a02=0.9),  # irregular wins over everything
            probabilities(a22=0.2, a04=0.45, a02=0.9),  # 0.2 is not > 0.2: edge-on
            probabilities(a04=0.4, a02=0.41),  # 0.4 is not > 0.4: disk
            probabilities(a02=0.4, a01=0.6),  # elliptical
        ]
    )
    assert morphology_class(rows).tolist() == ["irregular", "edge-on", "disk", "elliptical"]
    with pytest.raises(ValueError, match="37"):
        morphology_class(np.zeros((2, 5)))


def test_metrics_per_class_split_the_sample():
    classes = np.array(["disk", "elliptical", "disk"], dtype=object)
    per_class = metrics_by_class([2.0, 1.0, 3.0], [2.0, 2.0, 2.0], [0.5, 0.5, 0.5], classes)
    assert list(per_class) == ["disk", "elliptical"]
    assert per_class["disk"]["l1"] == pytest.approx(1.0) and per_class["disk"]["n"] == 2
    assert per_class["elliptical"]["l1"] == pytest.approx(2.0)
