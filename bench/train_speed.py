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
"""Training speed of the CPU recipes on the real data: samples/s, tokens/s and where a step's time goes.

Each recipe (the MAP classifier, the Eedi retriever, the cross-encoder reranker) trains for `--steps` optimizer steps
through its own script under `accelerate launch`, as `make demo` runs it, with `step_profile: true`
(`misconceptions.profiling.StepProfiler`: data loading, forward, backward, optimizer; the first 2 steps left out) and
no evaluation or checkpoints during training. Every recipe runs first as "baseline", with the speed levers off (fp32,
batches padded to their longest row: the code before them), then as "recipe", the file as it is (`cpu_bf16: auto`,
`length_bucket_size`). `--variant NAME=FLAGS` measures the same recipes again with extra flags in the same run, so
each lever is a ratio against a baseline taken on the same machine minutes apart; the CPU's ISA flags are recorded
with the figures. The cross-encoder trains on candidates of the packaged all-MiniLM-L6-v2
(zero-shot, made once) from that model: the same architecture and shapes as the recipe's start, the retriever.

    python bench/train_speed.py --map_dataset data/demo/map --eedi_dataset data/demo/eedi --steps 20 \\
        --variant "bf16=--cpu_bf16 true" --variant "bucket8=--length_bucket_size 8" \\
        --output bench/results/train_speed_levers.json
    python bench/train_speed.py ... --only classifier --variant "mpnet=--model_name_or_path builtin:all-mpnet-base-v2"
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from misconceptions.profiling import PROFILE_FILE, cpu_info


REPO = Path(__file__).resolve().parents[1]
RECIPES = {
    "classifier": ("scripts/train_classifier.py", "recipes/map/minilm-cpu.yaml"),
    "retriever": ("scripts/train_retriever.py", "recipes/eedi/minilm-cpu.yaml"),
    "cross-encoder": ("scripts/train_reranker.py", "recipes/eedi/reranker-minilm-cpu.yaml"),
}
ZERO_SHOT = "builtin:all-MiniLM-L6-v2"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--map_dataset", required=True, help="a MAP dataset folder (data_builders/build_map.py)")
    parser.add_argument("--eedi_dataset", required=True, help="an Eedi dataset folder (data_builders/build_eedi.py)")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run (default 30; 2 left out)")
    parser.add_argument("--only", nargs="+", choices=list(RECIPES), default=list(RECIPES), help="recipes to run")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=FLAGS",
        help="also run every recipe with these extra flags (repeatable); the baseline (levers off) and the recipe "
        "as it is always run first",
    )
    parser.add_argument("--work_dir", default=None, help="keeps the zero-shot candidates between runs")
    parser.add_argument("--output", required=True, help="JSON results file")
    args = parser.parse_args(argv)
    if args.steps < 5:
        parser.error(f"--steps must be at least 5 (2 warm-up steps are left out), got {args.steps}")
    for variant in args.variant:
        if "=" not in variant or not variant.split("=", 1)[0]:
            parser.error(f"--variant must be NAME=FLAGS, got {variant!r}")
    return args


def run(command: list[str]) -> float:
    print("$", shlex.join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True)
    return time.perf_counter() - started


def zero_shot_candidates(eedi_dataset: Path, work: Path) -> Path:
    """The packaged MiniLM's 100 candidates for every row: the cross-encoder's training input (made once)."""
    candidates = work / "zero-shot-candidates"
    if not (candidates / "dataset_info.json").exists():
        run([sys.executable, "scripts/retrieve.py", "--model", ZERO_SHOT, "--dataset", str(eedi_dataset),
             "--output_csv", str(work / "zero-shot.csv"), "--candidates_out", str(candidates),
             "--candidates_k", "100"])  # fmt: skip
    return candidates


# "baseline": the recipes as they trained before the speed levers (fp32, batches padded to their longest row), so a
# lever the recipes now turn on is still measured against the code it replaced; "recipe": the recipe file as it is.
LEVERS_OFF = {
    "classifier": ["--cpu_bf16", "false"],
    "retriever": ["--cpu_bf16", "false", "--length_bucket_size", "0"],
    "cross-encoder": ["--cpu_bf16", "false", "--length_bucket_size", "0"],
}


def recipe_flags(name: str, args: argparse.Namespace, candidates: Path | None) -> list[str]:
    """Dataset and no evaluation or checkpoints during training, per recipe."""
    common = ["--max_steps", str(args.steps), "--eval_strategy", "no", "--save_strategy", "no",
              "--load_best_model_at_end", "false", "--step_profile", "true", "--report_to", "none"]  # fmt: skip
    if name == "classifier":
        return [*common, "--dataset_name", args.map_dataset, "--tfidf_weight", "0"]
    if name == "retriever":
        return [*common, "--dataset_name", args.eedi_dataset, "--fold", "-1"]
    return [*common, "--dataset_name", args.eedi_dataset, "--candidates", str(candidates),
            "--model_name_or_path", ZERO_SHOT, "--final_eval", "false"]  # fmt: skip


def main(argv=None) -> dict:
    args = parse_args(argv)
    launch = [str(Path(sys.executable).with_name("accelerate")), "launch", "--num_processes", "1",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--num_cpu_threads_per_process", str(os.cpu_count())]  # fmt: skip
    extra = {v.split("=", 1)[0]: shlex.split(v.split("=", 1)[1]) for v in args.variant}
    results: dict = {"command": shlex.join(["python", "bench/train_speed.py", *(argv or sys.argv[1:])]),
                     "cpu": cpu_info(), "steps": args.steps, "runs": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        candidates = zero_shot_candidates(Path(args.eedi_dataset), work) if "cross-encoder" in args.only else None
        for name in args.only:
            script, recipe = RECIPES[name]
            for variant, flags in ({"baseline": LEVERS_OFF[name], "recipe": []} | extra).items():
                out = Path(tmp) / f"{name}-{variant}"
                wall = run([*launch, script, "--config", recipe, *recipe_flags(name, args, candidates), *flags,
                            "--output_dir", str(out)])  # fmt: skip
                profile = json.loads((out / PROFILE_FILE).read_text())
                results["runs"].setdefault(name, {})[variant] = profile | {"flags": flags, "wall_seconds": wall}
                print(f"{name:14s} {variant:12s} {profile['samples_per_second']:8.1f} samples/s "
                      f"{profile['tokens_per_second']:9.0f} tokens/s  {profile['share_of_step']}", flush=True)  # fmt: skip
    for runs in results["runs"].values():
        for run_result in runs.values():
            run_result["ratio_to_baseline"] = run_result["samples_per_second"] / runs["baseline"]["samples_per_second"]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
