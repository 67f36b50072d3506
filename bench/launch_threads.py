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
"""Training speed of a plain `accelerate launch` on the CPU against one with --num_cpu_threads_per_process.

Plain `accelerate launch` (no config file, no flags) sets OMP_NUM_THREADS=1; the training scripts then give torch
every core themselves (`misconceptions.cli.use_cpu_cores`). Three launches of the MiniLM classifier recipe on the
same rows, in one run on one machine: plain; with --num_cpu_threads_per_process <cores> (the Makefile's launch);
and plain with OMP_NUM_THREADS=1 set by the user (respected: one thread, the speed plain launches had before).
Speed is the trainer's train_samples_per_second; the thread count is the one each run logged.

    python bench/launch_threads.py --map_csv ../shared/data/map/train.csv --rows 3000 --max_steps 60 \
        --output bench/results/launch_threads.json
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from misconceptions.profiling import cpu_info


REPO = Path(__file__).resolve().parents[1]
RECIPE = "recipes/map/minilm-cpu.yaml"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--map_csv", required=True, help="the competition's MAP train.csv")
    parser.add_argument("--rows", type=int, default=3000, help="rows sampled (seed 0) for the dataset")
    parser.add_argument("--max_steps", type=int, default=60, help="training steps per launch")
    parser.add_argument("--output", required=True, help="JSON results file")
    return parser.parse_args(argv)


def launch(name: str, launch_flags: list[str], env: dict, dataset: Path, work: Path, max_steps: int) -> dict:
    """One training run through `accelerate launch`; its speed and the thread count it logged."""
    out = work / name
    command = [
        str(Path(sys.executable).with_name("accelerate")),
        "launch",
        *launch_flags,
        "scripts/train_classifier.py",
        RECIPE,
        "--dataset_name",
        str(dataset),
        "--output_dir",
        str(out),
        "--max_steps",
        str(max_steps),
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--load_best_model_at_end",
        "false",
        "--tfidf_weight",
        "0",
    ]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    threads = re.search(r"Training on the CPU with (\d+) threads", proc.stdout + proc.stderr)
    results = json.loads((out / "train_results.json").read_text())
    return {
        "command": " ".join(command[1:]).replace(str(dataset), "DATASET").replace(str(out), "OUT"),
        "env_OMP_NUM_THREADS": env.get("OMP_NUM_THREADS"),
        "threads_logged": int(threads.group(1)) if threads else None,
        "train_samples_per_second": results["train_samples_per_second"],
        "train_runtime": results["train_runtime"],
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    base_env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {"HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        frame = pd.read_csv(args.map_csv, dtype=str, keep_default_na=False).sample(args.rows, random_state=0)
        frame.to_csv(work / "train.csv", index=False)
        subprocess.run(
            [sys.executable, "data_builders/build_map.py", "--train_csv", str(work / "train.csv")]
            + ["--output_dir", str(work / "map")],
            cwd=REPO,
            env=base_env,
            check=True,
            capture_output=True,
        )
        runs = {
            "plain": launch("plain", [], base_env, work / "map", work, args.max_steps),
            "threads_flag": launch(
                "threads_flag",
                ["--num_cpu_threads_per_process", str(cores)],
                base_env,
                work / "map",
                work,
                args.max_steps,
            ),
            "user_one_thread": launch(
                "user_one_thread", [], base_env | {"OMP_NUM_THREADS": "1"}, work / "map", work, args.max_steps
            ),
        }
    speed = {name: run["train_samples_per_second"] for name, run in runs.items()}
    result = {
        "cpu": cpu_info(),
        "cores": cores,
        "python": platform.python_version(),
        "rows": args.rows,
        "max_steps": args.max_steps,
        "runs": runs,
        "plain_over_threads_flag": round(speed["plain"] / speed["threads_flag"], 3),
        "plain_over_one_thread": round(speed["plain"] / speed["user_one_thread"], 3),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
