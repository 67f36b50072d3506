# Copyright 2026 The misconceptions authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Load on the teacher-facing app: app/app.py on loopback, N concurrent gradio_client clients per phase.

Each client loops over real rows (MAP validation rows and Eedi wrong answers), alternating the two tabs' public
endpoints, until its phase ends (waiting 0.5 s after a busy answer). Per phase and tab: requests/s served, p50/p95/max latency, requests refused with
the busy message (Gradio's queue full, or our time limit), errors (anything else: a stack trace, a wrong answer
shape) and hung requests (no answer within --hang_seconds); the server's resident memory before and after.

    python bench/app_load.py --map_model data/demo/map-minilm-cpu --eedi_model data/demo/eedi-minilm-cpu \
        --misconceptions_csv ../shared/data/eedi/misconception_mapping.csv --map_csv data/demo/map/validation.csv \
        --eedi_csv ../shared/data/eedi/train.csv --phases 8:60 32:30 --output bench/results/app_load.json

Only loopback is ever contacted.
"""

import argparse
import json
import os
import platform
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd


REPO = Path(__file__).resolve().parents[1]
BACKOFF = 0.5  # seconds a client waits after a busy answer
sys.path.insert(0, str(REPO / "src"))

from misconceptions.app import BUSY  # noqa: E402
from misconceptions.eedi import pivot_wrong_answers, read_questions_csv  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--map_model", required=True)
    parser.add_argument("--eedi_model", required=True)
    parser.add_argument("--misconceptions_csv", required=True)
    parser.add_argument("--map_csv", required=True, help="MAP rows to send (the demo's validation.csv)")
    parser.add_argument("--eedi_csv", required=True, help="Eedi questions to send (train.csv)")
    parser.add_argument("--phases", nargs="+", default=["8:60", "32:30"], help="CLIENTS:SECONDS per phase")
    parser.add_argument("--concurrency_limit", type=int, default=2)
    parser.add_argument("--max_queue", type=int, default=32)
    parser.add_argument("--request_timeout", type=float, default=30.0)
    parser.add_argument("--hang_seconds", type=float, default=120.0, help="a request unanswered this long is hung")
    parser.add_argument("--output", default="bench/results/app_load.json")
    return parser.parse_args(argv)


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the server has no children; ONNX Runtime is in-process)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(args, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "app/app.py", "--map_model", args.map_model, "--eedi_model", args.eedi_model]
    command += ["--misconceptions_csv", args.misconceptions_csv, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--concurrency_limit", str(args.concurrency_limit), "--max_queue", str(args.max_queue)]
    command += ["--request_timeout", str(args.request_timeout)]
    with open(log, "w") as handle:
        server = subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the app exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return server
        except OSError:
            time.sleep(1)
    server.kill()
    raise SystemExit("the app did not start within 600 s")


def requests_for(args) -> dict[str, list[list]]:
    """Real inputs for each endpoint: MAP validation rows as custom-or-known questions, Eedi wrong answers."""
    from gradio_client import Client  # noqa: F401 (fail early when it is missing)

    map_rows = pd.read_csv(args.map_csv, dtype=str, keep_default_na=False).sample(200, random_state=0)
    eedi_rows = pivot_wrong_answers(read_questions_csv(args.eedi_csv)).sample(200, random_state=0)
    return {
        "map": [
            ["custom", r.QuestionText, r.MC_Answer, r.StudentExplanation or "no explanation", 3]
            for r in map_rows.itertuples()
        ],
        "eedi": [
            [r.QuestionText, r.CorrectAnswerText, r.AnswerText, r.ConstructName, r.SubjectName, 25]
            for r in eedi_rows.itertuples()
        ],
    }


def run_phase(url: str, labels: dict[str, str], inputs, clients: int, seconds: float, hang: float) -> list[dict]:
    from gradio_client import Client

    records: list[dict] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    endpoints = {"map": "/predict_map", "eedi": "/predict_eedi"}

    def client_loop(index: int) -> None:
        rng = random.Random(index)
        client = Client(url, verbose=False)
        tab = "map" if index % 2 == 0 else "eedi"
        start.wait()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            args = [labels[tab], *rng.choice(inputs[tab])]
            began = time.monotonic()
            outcome, detail = "ok", ""
            try:
                job = client.submit(*args, api_name=endpoints[tab])
                _, _, status = job.result(timeout=hang)
                if "best first" not in status:
                    outcome = "busy" if BUSY in status.replace("\\", "") else "error"
                    detail = status[:200]
            except TimeoutError:
                outcome = "hung"
            except Exception as err:  # noqa: BLE001 (every other failure is counted and described)
                outcome = "busy" if "Queue is full" in str(err) else "error"
                detail = f"{type(err).__name__}: {str(err)[:200]}"
            with lock:
                records.append({"tab": tab, "seconds": time.monotonic() - began, "outcome": outcome, "detail": detail})
            if outcome == "busy":
                time.sleep(BACKOFF)  # as a person (or a polite client) would, before trying again
            tab = "eedi" if tab == "map" else "map"

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    for thread in threads:
        thread.join(seconds + hang + 60)
    return records


def summarize(records: list[dict], seconds: float) -> dict:
    summary = {}
    for tab in ("map", "eedi"):
        rows = [r for r in records if r["tab"] == tab]
        served = np.array([r["seconds"] for r in rows if r["outcome"] == "ok"])
        summary[tab] = {
            "requests": len(rows),
            "served": len(served),
            "served_per_second": round(len(served) / seconds, 2),
            "p50_ms": round(float(np.percentile(served, 50)) * 1000, 1) if len(served) else None,
            "p95_ms": round(float(np.percentile(served, 95)) * 1000, 1) if len(served) else None,
            "max_ms": round(float(served.max()) * 1000, 1) if len(served) else None,
            "busy": sum(r["outcome"] == "busy" for r in rows),
            "errors": sum(r["outcome"] == "error" for r in rows),
            "hung": sum(r["outcome"] == "hung" for r in rows),
            "error_examples": sorted({r["detail"] for r in rows if r["outcome"] == "error"})[:3],
        }
    return summary


def main(argv=None) -> None:
    args = parse_args(argv)
    inputs = requests_for(args)
    port = free_port()
    log = Path(args.output).with_suffix(".server.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    server = start_server(args, port, log)
    url = f"http://127.0.0.1:{port}/"
    labels = {
        "map": args.map_model.partition("=")[0] if "=" in args.map_model else Path(args.map_model).name,
        "eedi": args.eedi_model.partition("=")[0] if "=" in args.eedi_model else Path(args.eedi_model).name,
    }
    flags = sorted({f for f in Path("/proc/cpuinfo").read_text().split() if f.startswith(("avx", "amx"))})
    result = {
        "command": " ".join([sys.executable.split("/")[-1], *sys.argv]),
        "cpu": platform.processor() or platform.machine(),
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "limits": {k: getattr(args, k) for k in ("concurrency_limit", "max_queue", "request_timeout")},
        "phases": [],
    }
    try:
        run_phase(url, labels, inputs, 1, 5, args.hang_seconds)  # warm up: first requests, client connections
        memory = rss_mb(server.pid)
        for phase in args.phases:
            clients, seconds = (float(x) for x in phase.split(":"))
            clients = int(clients)
            records = run_phase(url, labels, inputs, clients, seconds, args.hang_seconds)
            after = rss_mb(server.pid)
            entry = {
                "clients": clients,
                "seconds": seconds,
                "server_rss_mb_before": round(memory, 1),
                "server_rss_mb_after": round(after, 1),
                "tabs": summarize(records, seconds),
            }
            result["phases"].append(entry)
            memory = after
            print(json.dumps(entry, indent=1))
        first, last = result["phases"][0], result["phases"][-1]
        growth = last["server_rss_mb_after"] / first["server_rss_mb_after"] - 1
        result["rss_growth_between_runs"] = round(growth, 4)
        result["server_log_tracebacks"] = log.read_text().count("Traceback")
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"server memory growth between the runs: {result['rss_growth_between_runs']:+.1%}")
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
