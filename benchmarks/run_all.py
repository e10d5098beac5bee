"""Run every stage's benchmark, write one JSON report and a markdown table, and project
the measured rates to the GSWLC (700,000 galaxies) and Euclid (1.5 billion) scales.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python benchmarks/run_all.py
    ... run_all.py --scale full                # the sizes benchmarks/README.md documents (about an hour on 2 cores)
    ... run_all.py --gpu-cnn gpu-cnn.json      # add a GPU column from `benchmarks/cnn.py` run on a GPU worker
    ... run_all.py --update-docs               # put the table into docs/performance.md

Each benchmark runs in its own process (as ``python benchmarks/<name>.py``) and prints one
JSON object; this script keeps them whole under ``benchmarks`` in the report and derives,
per stage, a rate and the worker-hours a survey of each size would take. Training costs do
not grow with the catalogue (the networks and GBMs learn from the labelled sample, the
paper's 59,637 training galaxies); everything else is per galaxy. Nothing is invented: a
rate that was not measured (no GPU here, no PostgreSQL) is reported as not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from pipeline.learning.named_models import NAMED_MODELS as NAMED_MODEL_SPECS  # noqa: E402 - after the path
from pipeline.presets import ALL_ROLES  # noqa: E402

SURVEYS = {"GSWLC (700 k)": 700_000, "Euclid (1.5 G)": 1_500_000_000}
#: The labelled training sample the networks and GBMs learn from (the paper's train split).
TRAIN_GALAXIES = 59_637
EPOCHS = 30  # the paper preset
NAMED_MODELS = len(NAMED_MODEL_SPECS)  # every named model, gi_images included (the survey has i images)
NETWORKS = len(ALL_ROLES)  # the paper's four and CNN4 on colour
FEATURE_SETS = 5
PAPER_RESOLUTIONS = (69, 128, 197)
FEATURES_PER_GALAXY = 37 + 2048 + 37 + 37 + 37

#: name -> (arguments at --scale quick, at --scale full, needs PostgreSQL)
BENCHMARKS = {
    "ingest": (["--n", "20000"], ["--n", "100000"], True),
    "preprocess": (["--n", "60"], ["--n", "600"], False),
    "array_store": (["--n", "4000", "--batches", "100"], ["--n", "20000"], True),
    "cnn": (["--presets", "fast,paper", "--train-batches", "2", "--infer-batches", "4"], ["--presets", "test,fast,paper"], False),
    "features": (["--n", "10000"], ["--n", "100000"], True),
    "gbm": (["--n", "20000", "--configs", "paper"], ["--configs", "fast,paper"], False),
    "api": (["--n", "20000", "--repeat", "5"], ["--n", "100000"], True),
}


def run_benchmark(name: str, args: list[str]) -> dict:
    """Run one benchmark script; its JSON output, with the wall time."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(HERE / f"{name}.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    seconds = round(time.monotonic() - started, 1)
    if done.returncode != 0:
        return {
            "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}",
            "wall_s": seconds,
        }
    out = done.stdout
    start = 0 if out.startswith("{") else out.rfind("\n{") + 1
    return {**json.loads(out[start:]), "wall_s": seconds}


def cnn_rates(report: dict | None) -> dict | None:
    """Training and inference images/s of the paper's three networks from a cnn.py report."""
    if not report or "results" not in report:
        return None
    rates = {}
    for key, value in report["results"].items():
        if key.startswith("paper/"):
            arch = key.split("/")[1].split("_")[1]  # paper/cnn1_resnet50_197px -> resnet50
            rates[arch] = {"train": value["train_images_per_s"], "infer": value["inference_images_per_s"]}
    return rates or None


def cnn_hours(rates: dict | None) -> tuple[float | None, float | None]:
    """(training hours, which do not grow with the catalogue; inference seconds per galaxy)."""
    if not rates or not {"resnet50", "xception", "custom"} <= set(rates):
        return None, None
    # CNN1 (ResNet50), CNN2 (Xception), CNN3 (custom), CNN4 and CNN4 on colour (CNN1's network again, twice).
    resnets = NETWORKS - 2
    train_s_per_image = resnets / rates["resnet50"]["train"] + 1 / rates["xception"]["train"] + 1 / rates["custom"]["train"]
    infer_s_per_galaxy = resnets / rates["resnet50"]["infer"] + 1 / rates["xception"]["infer"] + 1 / rates["custom"]["infer"]
    return EPOCHS * TRAIN_GALAXIES * train_s_per_image / 3600, infer_s_per_galaxy


def stage_rows(results: dict, gpu_rates: dict | None) -> list[dict]:
    """Per stage: the rate measured and worker-hours per survey size (None: not measured)."""
    rows = []

    def per_galaxy(stage: str, what: str, seconds_per_galaxy: float | None, worker: str) -> None:
        rows.append(
            {
                "stage": stage,
                "what": what,
                "worker": worker,
                "fixed_hours": None,
                "hours": {k: None if seconds_per_galaxy is None else n * seconds_per_galaxy / 3600 for k, n in SURVEYS.items()},
            }
        )

    def fixed(stage: str, what: str, hours: float | None, worker: str) -> None:
        rows.append(
            {"stage": stage, "what": what, "worker": worker, "fixed_hours": hours, "hours": dict.fromkeys(SURVEYS, hours)}
        )

    ingest = results.get("ingest", {})
    rate = ingest.get("rows_per_second")
    per_galaxy(
        "ingest",
        f"catalogue rows into {ingest.get('database', '?')}: {fmt_rate(rate)} rows/s" if rate else "not measured",
        1 / rate if rate else None,
        "1 process",
    )
    pre = results.get("preprocess", {}).get("results", {}).get("256px", {})
    rate = pre.get("galaxies_per_second_per_core_full")
    per_galaxy(
        "preprocess",
        f"256 px, star removal, 3 resizes: {fmt_rate(rate)} galaxies/s/core" if rate else "not measured",
        1 / rate if rate else None,
        "cpu core",
    )
    store = results.get("array_store", {})
    rate = store.get("write_images_per_s")
    what = f"{fmt_rate(rate)} images/s at {store.get('resolution_px')} px, 3 sizes" if rate else "not measured"
    per_galaxy("image store writes", what, len(PAPER_RESOLUTIONS) / rate if rate else None, "disk")
    cpu_train_h, cpu_infer_s = cnn_hours(cnn_rates(results.get("cnn")))
    gpu_train_h, gpu_infer_s = cnn_hours(gpu_rates)
    fixed("cnn (train, CPU)", f"{NETWORKS} networks x {EPOCHS} epochs x {TRAIN_GALAXIES:,} galaxies", cpu_train_h, "cpu worker")
    fixed("cnn (train, GPU)", "the same" if gpu_train_h else "not measured: no GPU report (--gpu-cnn)", gpu_train_h, "gpu worker")
    per_galaxy("features (infer, CPU)", f"{NETWORKS} networks per galaxy", cpu_infer_s, "cpu worker")
    per_galaxy(
        "features (infer, GPU)",
        f"{NETWORKS} networks per galaxy" if gpu_infer_s else "not measured: no GPU report",
        gpu_infer_s,
        "gpu worker",
    )
    feats = results.get("features", {})
    rate = feats.get("store_rows_per_s")
    per_galaxy(
        "features (store)",
        f"{fmt_rate(rate)} vectors/s into {feats.get('database', '?')}" if rate else "not measured",
        FEATURE_SETS / rate if rate else None,
        "database",
    )
    gbm = results.get("gbm", {})
    paper = gbm.get("configs", {}).get("paper", {})
    scale = TRAIN_GALAXIES / gbm["n_galaxies"] if gbm.get("n_galaxies") else None
    train_h = NAMED_MODELS * paper["train_s"] * scale / 3600 if paper.get("train_s") and scale else None
    fixed(
        "gbm (train)",
        f"{NAMED_MODELS} models at the paper's settings, {TRAIN_GALAXIES:,} galaxies (scaled linearly)",
        train_h,
        "cpu worker",
    )
    rate = gbm.get("predict_rows_per_s")
    per_galaxy(
        "predict",
        f"{NAMED_MODELS} models: {fmt_rate(rate)} galaxies/s per model" if rate else "not measured",
        NAMED_MODELS / rate if rate else None,
        "cpu worker",
    )
    return rows


def storage(n: int) -> dict:
    """Bytes the image store (float16, the paper's resolutions) and the features (float32) take."""
    images = 2 * sum(r * r for r in PAPER_RESOLUTIONS) * n
    return {"image_store_gb": round(images / 1e9, 1), "features_gb": round(4 * FEATURES_PER_GALAXY * n / 1e9, 1)}


def fmt_hours(hours: float | None) -> str:
    if hours is None:
        return "not measured"
    if hours < 1:
        return f"{hours * 60:.1f} min"
    return f"{hours:,.0f} h" if hours >= 10 else f"{hours:.1f} h"


def fmt_rate(rate: float) -> str:
    """A measured rate to three significant figures, with thousands separators."""
    return f"{float(f'{rate:.3g}'):,.0f}" if rate >= 100 else f"{rate:.3g}"


def fmt_gb(gb: float) -> str:
    """Gigabytes as GB below a terabyte, TB above."""
    return f"{gb:.1f} GB" if gb < 1000 else f"{gb / 1000:,.1f} TB"


def markdown(report: dict) -> str:
    """The README's performance table: worker-hours per stage and where the time goes."""
    names = list(SURVEYS)
    lines = [
        f"Measured {report['date']} on {report['machine']} (`benchmarks/run_all.py --scale {report['scale']}`; "
        f"raw numbers in `benchmarks/results/report.json`). Worker-hours = galaxies / measured rate; training "
        f"is paid once, on the labelled sample.",
        "",
        f"| stage | measured | worker | {' | '.join(names)} |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for row in report["stages"]:
        cells = [fmt_hours(row["hours"][k]) for k in names]
        lines.append(f"| {row['stage']} | {row['what']} | {row['worker']} | {' | '.join(cells)} |")
    for device in ("CPU", "GPU"):
        share = report["where_the_time_goes"].get(device)
        if share:
            parts = ", ".join(f"{stage} {100 * f:.0f}%" for stage, f in share.items())
            lines.append(f"\nWhere the time goes at Euclid scale, {device} path: {parts}.")
    sizes = ", ".join(
        f"{k}: image store {fmt_gb(v['image_store_gb'])}, features {fmt_gb(v['features_gb'])}"
        for k, v in report["storage"].items()
    )
    lines.append(f"\nStorage: {sizes}.")
    api = report["benchmarks"].get("api", {})
    if "list_page_1000_ms" in api:
        lines.append(
            f"\nAPI ({api['galaxies']:,} galaxies, {api['database']}): a page of 1,000 galaxies "
            f"{api['list_page_1000_ms']} ms, one galaxy {api['galaxy_detail_ms']} ms, a 0.5 deg cone search "
            f"{api['cone_search_0.5deg_ms']} ms, downloads {api['csv_download_rows_per_s']:,} rows/s (CSV) and "
            f"{api['fits_download_rows_per_s']:,} rows/s (FITS)."
        )
    return "\n".join(lines) + "\n"


def where_the_time_goes(rows: list[dict], device: str) -> dict[str, float]:
    """Share of the Euclid-scale worker-hours per stage, on the CPU or the GPU path."""
    other = "GPU" if device == "CPU" else "CPU"
    euclid = list(SURVEYS)[-1]
    chosen = {r["stage"]: r["hours"][euclid] for r in rows if f"{other}" not in r["stage"]}
    if any(v is None for v in chosen.values()):
        return {}
    total = sum(chosen.values())
    return {k: v / total for k, v in sorted(chosen.items(), key=lambda kv: -kv[1])}


#: The document whose performance table the report replaces (between the markers).
PERFORMANCE_DOC = ROOT / "docs" / "performance.md"


def update_docs(table: str) -> None:
    text = PERFORMANCE_DOC.read_text()
    start, end = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"{PERFORMANCE_DOC} has no {start} ... {end} section to update")
    head, rest = text.split(start, 1)
    PERFORMANCE_DOC.write_text(f"{head}{start}\n{table}{end}{rest.split(end, 1)[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=("quick", "full"), default="quick")
    parser.add_argument("--only", help="comma-separated benchmarks (default: all)")
    parser.add_argument("--gpu-cnn", type=Path, help="JSON printed by benchmarks/cnn.py on a GPU worker")
    parser.add_argument(
        "--from-report",
        type=Path,
        help="re-derive the tables from an earlier report.json instead of running the benchmarks again (to add --gpu-cnn, say)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--update-docs", action="store_true", help="put the table into docs/performance.md")
    args = parser.parse_args()
    postgres = os.environ.get("DATABASE_URL", "").startswith("postgres")
    earlier = json.loads(args.from_report.read_text()) if args.from_report else {}
    results = earlier.get("benchmarks", {})
    for name in [] if args.from_report else (args.only.split(",") if args.only else BENCHMARKS):
        quick, full, needs_postgres = BENCHMARKS[name]
        if needs_postgres and not postgres:
            results[name] = {"skipped": "set DATABASE_URL to a PostgreSQL database"}
            continue
        print(f"{name:<12}running ...", file=sys.stderr, flush=True)
        results[name] = run_benchmark(name, quick if args.scale == "quick" else full)
        state = results[name].get("error", f"{results[name]['wall_s']} s")
        print(f"{name:<12}{state}", file=sys.stderr, flush=True)
    gpu = json.loads(args.gpu_cnn.read_text()) if args.gpu_cnn else None
    rows = stage_rows(results, cnn_rates(gpu))
    host = f"{os.cpu_count()} CPU cores, {platform.machine()}, Python {platform.python_version()}"
    report = {
        "date": earlier.get("date", datetime.now(UTC).strftime("%Y-%m-%d")),
        "scale": earlier.get("scale", args.scale),
        "machine": re.sub(r", (no GPU|GPU: .*)$", "", earlier.get("machine", host))
        + (f", GPU: {gpu.get('device')}" if gpu else ", no GPU"),
        "benchmarks": results,
        "gpu_cnn": gpu,
        "stages": rows,
        "where_the_time_goes": {d: where_the_time_goes(rows, d) for d in ("CPU", "GPU")},
        "storage": {k: storage(n) for k, n in SURVEYS.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (args.out / "report.md").write_text(table)
    if args.update_docs:
        update_docs(table)
    print(table)


if __name__ == "__main__":
    main()
