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
"""Fold models combined at inference against each fold model alone, on the same held-out questions.

The Eedi reference trains one model per fold (2 folds) and uses both. Here, on the CPU recipe: the questions are
split into 4 folds by QuestionId as in `make demo`; fold 0 is held out and never trained or tuned on. The other three
folds are split again into 2 folds, and the retriever recipe trains one model per fold (each picks its best epoch on
the other half). The held-out questions are then retrieved by fold model 0, fold model 1, and both combined
(`retrieve_candidates` with two folders: mean cosine similarity); MAP@25 and recall@25, seen and unseen apart.

With `--reranker_recipe`, each fold also gets the cross-encoder recipe, trained as `make demo` trains it (on its fold
retriever's 100 candidates for its training rows, starting from that retriever), and the held-out questions go through
retrieve -> rerank with fold 0's pair, fold 1's pair, and both pairs combined (`predict_eedi.py` with two retrievers
and two rerankers: mean cosine, then each candidate by its mean position in the two rerankers' lists).

    python bench/fold_combination.py --data_dir ../shared/data/eedi --output_dir data/bench-folds \
        --reranker_recipe recipes/eedi/reranker-minilm-cpu.yaml --output bench/results/fold_combination.json
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from misconceptions.profiling import cpu_info


REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="the competition's Eedi folder (train.csv, mapping)")
    parser.add_argument("--output_dir", required=True, help="work folder: datasets and fold models (reused)")
    parser.add_argument("--recipe", default="recipes/eedi/minilm-cpu.yaml", help="the retriever recipe")
    parser.add_argument("--reranker_recipe", default=None, help="also a cross-encoder recipe per fold (optional)")
    parser.add_argument("--output", required=True, help="JSON results file")
    return parser.parse_args(argv)


def run(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True)
    return time.perf_counter() - started


def main(argv=None) -> dict:
    args = parse_args(argv)
    out, data = Path(args.output_dir).resolve(), Path(args.data_dir).resolve()
    python = sys.executable
    mapping = str(data / "misconception_mapping.csv")
    four = out / "eedi-4folds"
    if not (four / "dataset_dict.json").exists():
        run([python, "data_builders/build_eedi.py", "--train_csv", str(data / "train.csv"), "--misconceptions_csv",
             mapping, "--output_dir", str(four), "--n_folds", "4"])  # fmt: skip
    two = out / "eedi-2folds-of-folds-1-3"
    if not (two / "dataset_dict.json").exists():
        rest = pd.concat([pd.read_csv(four / f"fold{k}.csv", dtype=str, keep_default_na=False) for k in (1, 2, 3)])
        rest_csv = out / "train-folds-1-3.csv"
        rest.to_csv(rest_csv, index=False)
        run([python, "data_builders/build_eedi.py", "--train_csv", str(rest_csv), "--misconceptions_csv", mapping,
             "--output_dir", str(two), "--n_folds", "2"])  # fmt: skip
    # accelerate gives one thread to a process unless told otherwise: every core, as `make demo` does
    launch = [str(Path(python).with_name("accelerate")), "launch", "--num_processes", "1",
              "--num_cpu_threads_per_process", str(os.cpu_count())]  # fmt: skip
    seconds = {}
    for k in (0, 1):
        model = out / f"retriever-fold{k}"
        if not (model / "train_results.json").exists():
            seconds[f"fold{k}"] = run([*launch, "scripts/train_retriever.py", "--config", args.recipe,
                                       "--dataset_name", str(two), "--fold", str(k), "--output_dir", str(model)])  # fmt: skip
    held_out = four / "fold0.csv"
    results: dict = {"recipe": args.recipe, "held_out": "fold 0 of 4 by QuestionId", "training_seconds": seconds}
    for name, models in (
        ("fold model 0", [out / "retriever-fold0"]),
        ("fold model 1", [out / "retriever-fold1"]),
        ("both combined", [out / "retriever-fold0", out / "retriever-fold1"]),
    ):
        csv = out / f"held-out-{name.replace(' ', '-')}.csv"
        command = [python, "scripts/retrieve.py", "--model", *map(str, models), "--input_csv", str(held_out)]
        run(command + ["--misconceptions_csv", mapping, "--output_csv", str(csv)])
        metrics = json.loads(csv.with_name(csv.stem + "_metrics.json").read_text())
        results[name] = {k: metrics[k] for k in ("map@25", "recall@25", "unseen_map@25", "seen_map@25", "rows")}
    if args.reranker_recipe:
        results["reranked"] = rerank_folds(args.reranker_recipe, out, two, held_out, mapping, launch, seconds)
    results["cpu"] = cpu_info()
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    for name in ("fold model 0", "fold model 1", "both combined"):
        r = results[name]
        print(f"{name:14s} MAP@25 {r['map@25']:.4f} recall@25 {r['recall@25']:.4f} "
              f"seen {r['seen_map@25']:.4f} unseen {r['unseen_map@25']:.4f} ({r['rows']} rows)")  # fmt: skip
    for name, r in results.get("reranked", {}).items():
        print(f"{name:14s} retrieve -> rerank MAP@25 {r['retriever_map@25']:.4f} -> {r['reranked_map@25']:.4f}, "
              f"unseen {r['unseen_retriever_map@25']:.4f} -> {r['unseen_reranked_map@25']:.4f}")  # fmt: skip
    return results


def rerank_folds(recipe: str, out: Path, two: Path, held_out: Path, mapping: str, launch: list, seconds: dict) -> dict:
    """Train the reranker recipe per fold on its retriever's candidates; score fold pairs alone and combined."""
    python = sys.executable
    for k in (0, 1):
        retriever, candidates, model = (
            out / f"retriever-fold{k}",
            out / f"candidates-fold{k}",
            out / f"reranker-fold{k}",
        )
        if not (candidates / "dataset_info.json").exists():
            run([python, "scripts/retrieve.py", "--model", str(retriever), "--dataset", str(two), "--output_csv",
                 str(out / f"train-predictions-fold{k}.csv"), "--candidates_out", str(candidates),
                 "--candidates_k", "100"])  # fmt: skip
        if not (model / "train_results.json").exists():
            seconds[f"reranker fold{k}"] = run([*launch, "scripts/train_reranker.py", "--config", recipe,
                                                "--dataset_name", str(two), "--fold", str(k), "--candidates",
                                                str(candidates), "--model_name_or_path", str(retriever),
                                                "--output_dir", str(model), "--final_eval", "false"])  # fmt: skip
    keys = ("retriever_map@25", "reranked_map@25", "retriever_recall@25", "reranked_recall@25",
            "seen_retriever_map@25", "seen_reranked_map@25", "unseen_retriever_map@25", "unseen_reranked_map@25", "rows")  # fmt: skip
    reranked = {}
    for name, folds in (("fold pair 0", [0]), ("fold pair 1", [1]), ("both combined", [0, 1])):
        csv = out / f"held-out-reranked-{name.replace(' ', '-')}.csv"
        run([python, "scripts/predict_eedi.py", "--retriever", *[str(out / f"retriever-fold{k}") for k in folds],
             "--reranker", *[str(out / f"reranker-fold{k}") for k in folds], "--input_csv", str(held_out),
             "--misconceptions_csv", mapping, "--output_csv", str(csv)])  # fmt: skip
        metrics = json.loads(csv.with_name(csv.stem + "_metrics.json").read_text())
        reranked[name] = {k: metrics[k] for k in keys}
    return reranked


if __name__ == "__main__":
    main()
