"""Load on the web service as deployed: gunicorn, the production settings, PostgreSQL, over HTTP.

Fills the configured database with a survey of ``--n`` generated galaxies and one model's
predictions (benchmarks/generated_survey.py), starts gunicorn on ``catalogue.wsgi`` with
``DEBUG=0``, a secret key, ``ALLOWED_HOSTS``, ``MORPHOMASS_HTTPS=1`` and kept database connections (requests carry the
proxy's ``X-Forwarded-Proto: https``, as behind the TLS proxy of docs/deployment.md), then
sends requests from ``--concurrency`` client threads for ``--seconds`` each, to each
endpoint in turn: a page of the catalogue with predictions, a galaxy's detail, a 0.5 degree
cone search. Prints one JSON object: per concurrency and endpoint, requests/s, p50, p95,
the slowest request and the errors (any status but 200, or a failed connection).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python benchmarks/load.py --n 700000

The TAP sync cone joins the endpoints once the service has TAP.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "catalogue.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from benchmarks.generated_survey import SURVEY, survey_of  # noqa: E402
from catalogue.models import Galaxy  # noqa: E402
from pipeline.learning.named_models import CATALOGUE_MODEL  # noqa: E402

HOST = "127.0.0.1"
#: What the production settings need (docs/deployment.md), for a throwaway server.
PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "load-benchmark-only-" + "x" * 40,
    "ALLOWED_HOSTS": HOST,
    "MORPHOMASS_HTTPS": "1",
    "DB_CONN_MAX_AGE": "60",  # as docker/compose.yml: a new connection per request halved the throughput
    "API_ANON_RATE": "100000000/minute",  # the benchmark measures the server, not its throttle
}


def endpoints(objid: int) -> dict[str, str]:
    return {
        "list_page_100": f"/api/galaxies/?survey={SURVEY}&model={CATALOGUE_MODEL}&page_size=100",
        "galaxy_detail": f"/api/galaxies/{objid}/?survey={SURVEY}",
        "cone_search_0.5deg": "/scs/?RA=150&DEC=0&SR=0.5&VERB=2",
    }


def start_gunicorn(port: int, workers: int, threads: int) -> subprocess.Popen:
    command = [str(Path(sys.executable).parent / "gunicorn"), "catalogue.wsgi", "--bind", f"{HOST}:{port}"]
    command += ["--workers", str(workers), "--threads", str(threads), "--worker-class", "gthread", "--log-level", "warning"]
    server = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **PRODUCTION})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.5)
    server.terminate()
    raise RuntimeError("gunicorn did not answer /healthz within 60 s")


def hammer(port: int, path: str, concurrency: int, seconds: float) -> dict:
    """``concurrency`` threads each sending GETs (one connection each, kept alive) for ``seconds``."""
    times: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=30)
        mine, failed = [], []
        while time.monotonic() < stop:
            start = time.perf_counter()
            try:
                connection.request("GET", path, headers={"X-Forwarded-Proto": "https", "Host": HOST})
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    failed.append(str(response.status))
            except (OSError, http.client.HTTPException) as exc:
                failed.append(type(exc).__name__)
                connection.close()
                connection = http.client.HTTPConnection(HOST, port, timeout=30)
            mine.append(time.perf_counter() - start)
        with lock:
            times.extend(mine)
            errors.extend(failed)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    ms = np.array(times) * 1e3
    return {
        "requests": len(times),
        "requests_per_s": round(len(times) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "max_ms": round(float(ms.max()), 1),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=700_000, help="galaxies in the generated survey")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--seconds", type=float, default=20.0, help="per endpoint and concurrency")
    parser.add_argument("--workers", type=int, default=(os.cpu_count() or 1) + 1, help="gunicorn processes")
    parser.add_argument("--threads", type=int, default=2, help="threads per gunicorn process")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--keep", action="store_true", help="leave the survey in the database for the next run")
    parser.add_argument("--reuse", action="store_true", help="use a survey a --keep run left (of the same --n)")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    survey = survey_of(args.n, reuse=args.reuse)
    objid = Galaxy.objects.filter(survey=survey).order_by("objid").values_list("objid", flat=True)[args.n // 2]
    server = start_gunicorn(args.port, args.workers, args.threads)
    results: dict = {}
    try:
        for concurrency in args.concurrency:
            results[str(concurrency)] = {
                name: hammer(args.port, path, concurrency, args.seconds) for name, path in endpoints(objid).items()
            }
    finally:
        server.terminate()
        server.wait(timeout=30)
        if not args.keep:
            survey.delete()
    print(
        json.dumps(
            {
                "benchmark": "load",
                "galaxies": args.n,
                "server": f"gunicorn gthread, {args.workers} workers x {args.threads} threads, DEBUG=0, PostgreSQL",
                "cpus": os.cpu_count(),
                "seconds_per_run": args.seconds,
                "by_concurrency": results,
                "goal": "p95 under 100 ms at concurrency 8 on a 2-core machine, zero errors",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
