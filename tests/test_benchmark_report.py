"""The benchmarks' own logic: run_all.py's projections (worker-hours are galaxies over the measured
rates, training is paid once, what was not measured says so instead of a number) and transfer.py's
split-conformal calibration of the models stored before cross-conformal intervals."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_all = _load("run_all")
transfer = _load("transfer")

MEASURED = {
    "ingest": {"rows_per_second": 20_000, "database": "postgresql"},
    "preprocess": {"results": {"256px": {"galaxies_per_second_per_core_full": 100.0}}},
    "array_store": {"write_images_per_s": 3000, "resolution_px": 197},
    "cnn": {
        "results": {
            "paper/cnn1_resnet50_197px": {"train_images_per_s": 10.0, "inference_images_per_s": 50.0},
            "paper/cnn2_xception_128px": {"train_images_per_s": 20.0, "inference_images_per_s": 100.0},
            "paper/cnn3_custom_69px": {"train_images_per_s": 400.0, "inference_images_per_s": 1000.0},
        }
    },
    "features": {"store_rows_per_s": 5000, "database": "postgresql"},
    "gbm": {"n_galaxies": 59_637, "configs": {"paper": {"train_s": 300.0}}, "predict_rows_per_s": 60_000},
}


def by_stage(rows):
    return {row["stage"]: row for row in rows}


def test_hours_are_galaxies_over_rates_and_training_does_not_grow_with_the_survey():
    rows = by_stage(run_all.stage_rows(MEASURED, gpu_rates=None))
    gswlc, euclid = run_all.SURVEYS
    assert rows["preprocess"]["hours"][gswlc] == pytest.approx(700_000 / 100 / 3600)
    assert rows["ingest"]["hours"][euclid] == pytest.approx(1.5e9 / 20_000 / 3600)
    infer = 3 / 50 + 1 / 100 + 1 / 1000  # CNN1, CNN4 and CNN4 on colour share ResNet50
    assert rows["features (infer, CPU)"]["hours"][gswlc] == pytest.approx(700_000 * infer / 3600)
    train = 30 * 59_637 * (3 / 10 + 1 / 20 + 1 / 400) / 3600
    assert rows["cnn (train, CPU)"]["hours"][gswlc] == rows["cnn (train, CPU)"]["hours"][euclid] == pytest.approx(train)
    assert rows["gbm (train)"]["fixed_hours"] == pytest.approx(7 * 300 / 3600)  # the seven named models
    assert rows["predict"]["hours"][gswlc] == pytest.approx(700_000 * 7 / 60_000 / 3600)


def test_what_was_not_measured_is_reported_as_such():
    rows = by_stage(run_all.stage_rows({"preprocess": MEASURED["preprocess"]}, gpu_rates=None))
    assert rows["cnn (train, GPU)"]["fixed_hours"] is None and "not measured" in rows["cnn (train, GPU)"]["what"]
    assert rows["ingest"]["hours"]["GSWLC (700 k)"] is None
    assert run_all.where_the_time_goes(list(rows.values()), "CPU") == {}  # no shares from missing numbers
    assert run_all.fmt_hours(None) == "not measured" and run_all.fmt_hours(0.5) == "30.0 min"


def test_a_gpu_report_fills_the_gpu_rows_and_the_shares_add_up():
    gpu = run_all.cnn_rates(
        {
            "results": {
                k: {
                    "train_images_per_s": 10 * v["train_images_per_s"],
                    "inference_images_per_s": 10 * v["inference_images_per_s"],
                }
                for k, v in MEASURED["cnn"]["results"].items()
            }
        }
    )
    rows = run_all.stage_rows(MEASURED, gpu_rates=gpu)
    stages = by_stage(rows)
    cpu, gpu_hours = stages["cnn (train, CPU)"]["fixed_hours"], stages["cnn (train, GPU)"]["fixed_hours"]
    assert gpu_hours == pytest.approx(cpu / 10)
    for device in ("CPU", "GPU"):
        shares = run_all.where_the_time_goes(rows, device)
        assert sum(shares.values()) == pytest.approx(1.0)
        assert not any(("GPU" if device == "CPU" else "CPU") in stage for stage in shares)


def test_numbers_read_as_people_write_them():
    assert run_all.fmt_rate(30324.6) == "30,300" and run_all.fmt_rate(88.71) == "88.7"
    assert run_all.fmt_gb(83.9) == "83.9 GB" and run_all.fmt_gb(179_862.0) == "179.9 TB"


def test_a_gpu_report_is_added_to_a_saved_report_without_running_anything_again(tmp_path):
    import json
    import subprocess
    import sys

    saved = {
        "date": "2026-01-02",
        "scale": "quick",
        "machine": "2 CPU cores, x86_64, Python 3.11.7, no GPU",
        "benchmarks": MEASURED,
    }
    (tmp_path / "report.json").write_text(json.dumps(saved))
    gpu = {
        "device": "H200",
        "results": {
            k: {"train_images_per_s": 10 * v["train_images_per_s"], "inference_images_per_s": 10 * v["inference_images_per_s"]}
            for k, v in MEASURED["cnn"]["results"].items()
        },
    }
    (tmp_path / "gpu.json").write_text(json.dumps(gpu))
    command = [
        sys.executable,
        str(BENCHMARKS / "run_all.py"),
        "--from-report",
        str(tmp_path / "report.json"),
        "--gpu-cnn",
        str(tmp_path / "gpu.json"),
        "--out",
        str(tmp_path / "new"),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    report = json.loads((tmp_path / "new" / "report.json").read_text())
    assert report["date"] == "2026-01-02" and report["machine"] == "2 CPU cores, x86_64, Python 3.11.7, GPU: H200"
    assert report["benchmarks"] == MEASURED  # nothing was run again
    gpu_train = by_stage(report["stages"])["cnn (train, GPU)"]["fixed_hours"]
    assert gpu_train == pytest.approx(by_stage(report["stages"])["cnn (train, CPU)"]["fixed_hours"] / 10)
    assert "GPU path" in (tmp_path / "new" / "report.md").read_text()


def test_the_split_conformal_calibration_of_stored_models_corrects_per_class_with_enough_validation_galaxies():
    rng = np.random.default_rng(0)
    n = 400
    groups = np.where(np.arange(n) < 300, "calm", "wild")
    y = 10 ** np.where(groups == "calm", rng.normal(0, 0.05, n), rng.normal(0, 0.3, n))
    model = transfer.split_conformal("residual", np.zeros((n, 0)), y, np.zeros((n, 0)), y, np.ones(n), groups_val=groups)
    assert model.corrections[(0.68, "wild")] > 3 * model.corrections[(0.68, "calm")]
    lo, hi = model.intervals(np.zeros((2, 0)), np.ones(2), np.array(["calm", "unknown"], dtype=object))[0.68]
    assert hi[0] < hi[1] and hi[1] == pytest.approx(10 ** model.corrections[0.68])  # unknown class: the shared width
    # A class too small for its own correction shares one calibrated on the small classes only,
    # not a pooled one that the big quiet class would set.
    groups = np.where(np.arange(n) < 350, "calm", "rare")
    y = 10 ** np.where(groups == "calm", rng.normal(0, 0.05, n), rng.normal(0, 0.3, n))
    model = transfer.split_conformal("residual", np.zeros((n, 0)), y, np.zeros((n, 0)), y, np.ones(n), groups_val=groups)
    lo, hi = model.intervals(np.zeros((n, 0)), np.ones(n), groups)[0.68]
    rare = groups == "rare"
    assert (0.68, "rare") not in model.corrections and np.mean((lo[rare] <= y[rare]) & (y[rare] <= hi[rare])) >= 0.68
