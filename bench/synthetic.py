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
"""Synthetic data, measured: generation throughput and valid share for each backend available here, then the
retriever's MAP@25 on the held-out fold's unseen misconceptions trained without and with the synthetic questions
(same fold, same recipe, same seed, one run).

The generator writes questions for the misconceptions of the held-out fold that have no training row (what the
unseen MAP@25 measures). On a GPU the Eedi reference solution (README, "Where the recipes come from") generates
for every misconception without training data; here, on 2 CPU cores, that would take hours, so the targets are
narrowed to the ones the fold tests (`--max_misconceptions` narrows further).

Usage:

    python bench/synthetic.py --dataset data/demo/eedi --fold 0 --work_dir data/bench-synthetic \
        --output bench/results/synthetic.json [--backends transformers,vllm] [--max_misconceptions 100] \
        [--skip_retrieval] [--retriever_flags "--num_train_epochs 3"]
"""

import argparse
import importlib.util
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from misconceptions import load_eedi_dataset, write_json
from misconceptions.synthetic import read_generations, synthetic_dataset, synthetic_questions


REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="data/demo/eedi", help="folder written by data_builders/build_eedi.py")
    parser.add_argument("--fold", type=int, default=0, help="held-out fold (default 0)")
    parser.add_argument("--recipe", default="recipes/eedi/synthetic-smollm2-cpu.yaml", help="generation recipe")
    parser.add_argument("--retriever_recipe", default="recipes/eedi/minilm-cpu.yaml", help="retriever recipe")
    parser.add_argument("--retriever_flags", default="", help="extra train_retriever.py flags for both arms")
    parser.add_argument("--backends", default="transformers,vllm", help="backends to try (skipped if not installed)")
    parser.add_argument("--max_misconceptions", type=int, default=None, help="generate for at most N targets")
    parser.add_argument("--n_per_misconception", type=int, default=2, help="questions asked per target (default 2)")
    parser.add_argument("--skip_retrieval", action="store_true", help="measure generation only")
    parser.add_argument(
        "--analysis_only",
        action="store_true",
        help="reuse work_dir's generations and the two retrievers: add the per-row split to --output's JSON",
    )
    parser.add_argument("--work_dir", default="data/bench-synthetic", help="generations, datasets and models")
    parser.add_argument("--output", default="bench/results/synthetic.json", help="where the JSON is written")
    return parser.parse_args(argv)


def run(args: list[str]) -> None:
    print("$", shlex.join(args), flush=True)
    subprocess.run(args, cwd=REPO, check=True)


def unseen_targets(dataset: str, fold: int) -> list[int]:
    """Misconceptions of the held-out fold without a row in the training folds."""
    pairs, _ = load_eedi_dataset(dataset)
    train = pairs["train"].to_pandas()
    held_out = set(train.loc[train["fold"] == fold, "MisconceptionId"])
    return sorted(held_out - set(train.loc[train["fold"] != fold, "MisconceptionId"]))


def per_row_split(dataset: str, fold: int, work: Path, generations: Path) -> dict:
    """Held-out MAP@25 of both retrievers on three groups of rows: misconceptions that got a valid synthetic
    question, targeted ones that got none, and the rest (how much of a difference is the synthetic data's)."""
    from misconceptions.eedi import dataset_rows
    from misconceptions.metrics import average_precision_at_k
    from misconceptions.retrieval import retrieve_candidates

    records = read_generations(generations)
    covered = {r["MisconceptionId"] for r in records if r["questions"]}
    targeted = {r["MisconceptionId"] for r in records}
    split: dict = {}
    pairs, misconceptions = load_eedi_dataset(dataset)
    held_out = dataset_rows(pairs, fold, dataset)
    for arm in ("real", "real+synthetic"):
        candidates, _, _ = retrieve_candidates(
            str(work / f"retriever-{arm.replace('+', '-')}"), held_out, misconceptions, 25
        )
        candidates = candidates[candidates["MisconceptionId"].notna()]
        gold = candidates["MisconceptionId"].astype(int)
        ap = [average_precision_at_k(g, ids, 25) for g, ids in zip(gold, candidates["candidate_ids"], strict=True)]
        ap = pd.Series(ap, index=candidates.index)
        groups = {
            "with_a_synthetic_question": gold.isin(covered),
            "targeted_without_a_valid_question": gold.isin(targeted - covered),
            "not_targeted": ~gold.isin(targeted),
        }
        for group, mask in groups.items():
            split.setdefault(group, {"rows": int(mask.sum())})[f"{arm}_map@25"] = float(ap[mask].mean())
    return split


def main(argv=None) -> dict:
    args = parse_args(argv)
    work = Path(args.work_dir)
    if args.analysis_only:
        results = json.loads(Path(args.output).read_text())
        results["per_row_split"] = per_row_split(args.dataset, args.fold, work, work / "generations-transformers")
        results["per_row_split_command"] = "python bench/synthetic.py " + shlex.join(argv or sys.argv[1:])
        print(json.dumps(results["per_row_split"], indent=1))
        write_json(args.output, results)
        return results
    targets = unseen_targets(args.dataset, args.fold)[: args.max_misconceptions]
    results: dict = {
        "command": "python bench/synthetic.py " + shlex.join(argv or sys.argv[1:]),
        "fold": args.fold,
        "targets": len(targets),
        "n_per_misconception": args.n_per_misconception,
        "generation": {},
    }
    generations = None
    for backend in args.backends.split(","):
        module = "vllm" if backend == "vllm" else "transformers"
        if importlib.util.find_spec(module) is None:
            results["generation"][backend] = {"available": False}
            print(f"{backend}: not installed here, skipped")
            continue
        out = work / f"generations-{backend}"
        started = time.perf_counter()
        run(
            [sys.executable, "scripts/generate_synthetic.py", "--config", args.recipe, "--backend", backend]
            + ["--dataset_name", args.dataset, "--fold", str(args.fold), "--output_dir", str(out)]
            + ["--n_per_misconception", str(args.n_per_misconception), "--max_misconceptions", str(len(targets))]
            + ["--misconception_ids"]
            + [str(i) for i in targets]
        )
        wall = time.perf_counter() - started
        summary = json.loads((out / "summary.json").read_text())
        this_run = summary["this_run"]
        results["generation"][backend] = {
            "available": True,
            "wall_seconds_with_model_load": round(wall, 1),
            "generation_seconds": this_run["seconds"],
            "generations_per_minute": this_run["generations_per_minute"],
            "valid_questions_per_minute": this_run["valid_per_minute"],
            "valid_share": summary["valid_share"],
            "questions": summary["questions"],
            "misconceptions_with_a_question": sum(bool(r["questions"]) for r in read_generations(out)),
            "reasons": summary["reasons"],
        }
        print(backend, json.dumps(results["generation"][backend]))
        generations = generations or out
    if not args.skip_retrieval and generations is not None:
        _, misconceptions = load_eedi_dataset(args.dataset)
        synthetic = work / "synthetic"
        synthetic_dataset(synthetic_questions(read_generations(generations)), misconceptions).save_to_disk(
            str(synthetic)
        )
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1"]
        launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "2"]
        arms = {"real": [], "real+synthetic": ["--extra_datasets", str(synthetic)]}
        for arm, extra in arms.items():
            out = work / f"retriever-{arm.replace('+', '-')}"
            started = time.perf_counter()
            run(
                launch
                + ["scripts/train_retriever.py", "--config", args.retriever_recipe, "--dataset_name", args.dataset]
                + ["--fold", str(args.fold), "--output_dir", str(out), "--overwrite_output_dir", "true"]
                + shlex.split(args.retriever_flags)
                + extra
            )
            metrics = json.loads((out / "eval_results.json").read_text())
            results[f"retriever_{arm}"] = {
                "model": str(out),
                "train_seconds": round(time.perf_counter() - started, 1),
                "train_rows": json.loads((out / "train_results.json").read_text())["train_samples"],
                **{k.removeprefix("eval_"): v for k, v in metrics.items() if "map@25" in k or "recall@25" in k},
            }
            print(arm, json.dumps(results[f"retriever_{arm}"]))
        results["unseen_map@25_gain"] = (
            results["retriever_real+synthetic"]["unseen_map@25"] - results["retriever_real"]["unseen_map@25"]
        )
    write_json(args.output, results)
    print(f"Wrote {args.output}")
    return results


if __name__ == "__main__":
    main()
