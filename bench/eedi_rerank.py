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
"""Eedi reranking on one held-out fold, in one run: the retriever alone, + the pointwise reranker, + the listwise
reranker (each with its saved blend weight; the cross-encoder also alone, with rerank_scope "seen", and with
`--compare_bf16` the same under bf16 autocast, or under bf16 alone with `--bf16_only`), scored by
MAP@25 and recall@25, seen and unseen misconceptions apart, with wall time per 1,000 queries. The candidates are the
retriever's, computed here. `--listwise_zero_shot` adds an instruction-tuned causal LM as a listwise reranker as it
ships, untrained (a quality check of a model before fine-tuning it as one), at each of `--zero_shot_blends`.

Usage:

    python bench/eedi_rerank.py --dataset data/demo/eedi --fold 0 --retriever data/demo/eedi-minilm-cpu \
        --pointwise data/demo/eedi-reranker-minilm-cpu --listwise data/eedi-reranker-smollm2-cpu \
        --output bench/results/eedi_rerank.json
    python bench/eedi_rerank.py --dataset data/demo/eedi --fold 0 --retriever data/demo/eedi-minilm-cpu \
        --listwise_zero_shot builtin:Qwen2.5-Coder-0.5B-Instruct --max_rows 300 --output bench/results/zero_shot.json
"""

import argparse
import sys
import time

import numpy as np
import torch

from misconceptions import write_json
from misconceptions.eedi import dataset_rows, load_eedi_dataset
from misconceptions.model_utils import resolve_model_path
from misconceptions.pointwise import orders_from_logprobs, pointwise_logprobs
from misconceptions.rerank import apply_orders, keep_unseen_in_place, rerank_frame, rerank_metrics
from misconceptions.rerank_model import Reranker, load_reranker
from misconceptions.retrieval import retrieve_candidates
from misconceptions.settings import RerankerSettings


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="data/demo/eedi", help="folder written by data_builders/build_eedi.py")
    parser.add_argument("--fold", type=int, default=0, help="held-out fold (default 0)")
    parser.add_argument(
        "--retriever",
        nargs="+",
        required=True,
        help="train_retriever.py folder (trained without this fold); several combine by mean cosine (retrieve.py's)",
    )
    parser.add_argument("--pointwise", default=None, help="train_reranker.py folder, reranker_type pointwise")
    parser.add_argument("--listwise", default=None, help="train_reranker.py folder, reranker_type listwise")
    parser.add_argument("--max_rows", type=int, default=None, help="score only the first N held-out rows")
    parser.add_argument(
        "--blend_sweep",
        default="0.1,0.2,0.3,0.4,0.5,0.7",
        help="pointwise blend weights also reported, on all rows and on the even/odd halves (how 0.3 was chosen)",
    )
    parser.add_argument(
        "--compare_bf16",
        action="store_true",
        help="also score with the cross-encoder under bf16 autocast (rows named pointwise_bf16*), for its speed and MAP",
    )
    parser.add_argument(
        "--bf16_only",
        action="store_true",
        help="score with the cross-encoder under bf16 autocast only (rows named pointwise_bf16*; 1.8x faster than fp32 "
        "where the CPU has native bf16, the same MAP@25 within 0.001), for a cross-encoder too slow to score twice",
    )
    parser.add_argument(
        "--listwise_zero_shot",
        default=None,
        help="an instruction-tuned causal LM (folder, Hub id or builtin: name) used as the listwise reranker untrained",
    )
    parser.add_argument(
        "--zero_shot_settings",
        default="top_k=20,window=10,stride=5,dtype=bfloat16",
        help="the untrained listwise reranker's top_k, window, stride and weights' dtype",
    )
    parser.add_argument(
        "--zero_shot_blends", default="0,0.5", help="its blend weights with the retriever, one scoring pass each"
    )
    parser.add_argument("--output", default="bench/results/eedi_rerank.json", help="where the JSON is written")
    return parser.parse_args(argv)


def zero_shot_listwise(name: str, options: str) -> Reranker:
    """A causal LM as it ships, as a listwise Reranker (the Eedi reference fine-tunes one: exp015)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    values = dict(item.split("=", 1) for item in options.split(",") if item)
    path = resolve_model_path(name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, values.get("dtype", "float32"))).eval()
    settings = RerankerSettings(
        reranker_type="listwise",
        rerank_top_k=int(values.get("top_k", 20)),
        window=int(values.get("window", 10)),
        stride=int(values.get("stride", 5)),
        max_length=int(values.get("max_length", 2048)),
    )
    return Reranker("listwise", model, tokenizer, settings)


def blend_sweep(candidates, logprobs, scores, weights: list[float], top_k: int, scale: float) -> dict:
    """MAP@25 of the pointwise scores at each blend weight, on all rows and on the even/odd halves."""
    n = len(candidates)
    even = np.arange(n) % 2 == 0
    sweep = {}
    for w in weights:
        ranked = apply_orders(candidates["candidate_ids"], orders_from_logprobs(logprobs, scores, w, scale), top_k)
        sweep[str(w)] = {
            part: rerank_metrics(candidates[mask].reset_index(drop=True), ranked[mask])["reranked_map@25"]
            for part, mask in (("all", np.ones(n, dtype=bool)), ("even", even), ("odd", ~even))
        }
    print("blend sweep (MAP@25 all/even/odd):", {w: [round(v, 4) for v in d.values()] for w, d in sweep.items()})
    return sweep


def report(results: dict, candidates, seen, settings, folder: str, ranked_by: dict, variants: dict, seconds: float):
    """Score each ordering in `ranked_by` into `results` and print it; `seconds` is the scoring time they share."""
    n = len(candidates)
    for label, ranked in ranked_by.items():
        metrics = rerank_metrics(candidates, ranked, seen)
        results[label] = {
            "model": folder,
            "blend_weight": variants[label],
            "rerank_top_k": settings.rerank_top_k,
            "window": settings.window if settings.reranker_type == "listwise" else None,
            "stride": settings.stride if settings.reranker_type == "listwise" else None,
            **{k.replace("reranked_", ""): v for k, v in metrics.items() if "retriever" not in k},
            "gain_map@25": metrics["reranked_map@25"] - metrics["retriever_map@25"],
            "seconds_per_1000_queries": 1000 * seconds / n,
        }
        print(
            f"{label} (blend {variants[label]}): MAP@25 {metrics['reranked_map@25']:.4f} "
            f"({metrics['reranked_map@25'] - metrics['retriever_map@25']:+.4f}), recall@25 "
            f"{metrics['reranked_recall@25']:.4f}; seen {metrics['seen_reranked_map@25']:.4f}, unseen "
            f"{metrics['unseen_reranked_map@25']:.4f}; {1000 * seconds / n:.1f} s per 1,000 queries"
        )


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(0)
    started = time.perf_counter()  # reading the held-out rows included, as when they came from a CSV
    pairs, misconceptions = load_eedi_dataset(args.dataset)
    held_out = dataset_rows(pairs, args.fold, args.dataset)
    candidates, retriever_settings, info = retrieve_candidates(args.retriever, held_out, misconceptions, 100)
    retrieve_seconds = time.perf_counter() - started
    candidates = candidates[candidates["MisconceptionId"].notna()].reset_index(drop=True)
    if args.max_rows:
        candidates = candidates.iloc[: args.max_rows]
    seen = set(retriever_settings.seen_misconception_ids)
    n = len(candidates)
    ranked_by_retriever = candidates["candidate_ids"].tolist()
    base = rerank_metrics(candidates, ranked_by_retriever, seen)
    results: dict = {
        "command": "python bench/eedi_rerank.py " + " ".join(argv or sys.argv[1:]),
        "fold": args.fold,
        "rows": n,
        "torch_threads": torch.get_num_threads(),
        "retriever": {
            "model": args.retriever,
            **{k.replace("retriever_", ""): v for k, v in base.items() if "reranked" not in k},
            "seconds_per_1000_queries": 1000 * retrieve_seconds / max(len(candidates), 1),
            "queries_per_second_encoding": info["queries_per_second"],
        },
    }
    print(f"retriever: MAP@25 {base['retriever_map@25']:.4f}, recall@25 {base['retriever_recall@25']:.4f} ({n} rows)")
    for kind, folder in (("pointwise", args.pointwise), ("listwise", args.listwise)):
        if not folder:
            continue
        reranker = load_reranker(folder)
        settings = reranker.settings
        top_k, weight, scale = settings.rerank_top_k, settings.blend_weight, settings.retriever_scale
        if kind == "listwise":
            started = time.perf_counter()
            ranked_by = {kind: rerank_frame(reranker, candidates)}
            report(
                results, candidates, seen, settings, folder, ranked_by, {kind: weight}, time.perf_counter() - started
            )
            continue
        # One scoring pass per precision; the saved blend, the cross-encoder alone and the seen scope are orderings
        # of the same scores.
        names = [list(n[:top_k]) for n in candidates["candidate_names"]]
        scores = [np.asarray(s[:top_k]) for s in candidates["candidate_scores"]]
        weights = [float(x) for x in args.blend_sweep.split(",") if x]
        precisions = ("fp32", "bf16") if args.compare_bf16 else ("bf16",) if args.bf16_only else ("fp32",)
        for precision in precisions:
            started = time.perf_counter()
            logprobs = pointwise_logprobs(reranker, candidates["query"].tolist(), names, bf16=precision == "bf16")
            seconds = time.perf_counter() - started
            label = kind if precision == "fp32" else f"{kind}_bf16"
            orders = orders_from_logprobs(logprobs, scores, weight, scale)
            kept = keep_unseen_in_place(candidates["candidate_ids"], orders, settings.seen_misconception_ids)
            alone = orders_from_logprobs(logprobs, scores, 0.0, scale)
            ranked_by = {
                label: apply_orders(candidates["candidate_ids"], orders, top_k),
                f"{label}_reranker_only": apply_orders(candidates["candidate_ids"], alone, top_k),
                # rerank_scope "seen": only the misconceptions the reranker was trained on move
                f"{label}_seen_only": apply_orders(candidates["candidate_ids"], kept, top_k),
            }
            variants = {label: weight, f"{label}_reranker_only": 0.0, f"{label}_seen_only": weight}
            report(results, candidates, seen, settings, folder, ranked_by, variants, seconds)
            if precision == precisions[0]:
                results[f"{kind}_blend_sweep_map@25"] = blend_sweep(
                    candidates, logprobs, scores, weights, top_k, scale
                )
    if args.listwise_zero_shot:
        reranker = zero_shot_listwise(args.listwise_zero_shot, args.zero_shot_settings)
        for weight in [float(x) for x in args.zero_shot_blends.split(",") if x]:
            label = f"listwise_zero_shot_blend{weight:g}"
            started = time.perf_counter()
            ranked_by = {label: rerank_frame(reranker, candidates, blend_weight=weight)}
            seconds = time.perf_counter() - started
            report(
                results,
                candidates,
                seen,
                reranker.settings,
                args.listwise_zero_shot,
                ranked_by,
                {label: weight},
                seconds,
            )
    write_json(args.output, results)
    print(f"Wrote {args.output}")
    return results


if __name__ == "__main__":
    main()
