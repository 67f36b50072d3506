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
"""Eedi reranking: the retriever's top candidates reordered by a model that reads the query and the descriptions.

`rerank_frame` reranks a candidates frame (`candidates.read_candidates`) with either reranker (`listwise`,
`pointwise`; loaded by `rerank_model.load_reranker`), keeping the rest of each list in the retriever's order;
`rerank_metrics` scores both orders (MAP@25 and recall@25, seen and unseen misconceptions apart). Also here: the end
of a training run (`finalize_reranker`) and the options and outputs shared by scripts/rerank.py and
scripts/predict_eedi.py.
"""

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .candidates import submission_frame
from .errors import InputError
from .io_utils import atomic_path, write_json
from .listwise import rerank_listwise
from .plots import PLOTS_DIR, link_plots_in_card, plot_eedi, plot_training_curves, prediction_plots_dir
from .pointwise import rerank_pointwise
from .rerank_model import Reranker, write_reranker_meta
from .retrieval import retrieval_metrics
from .training import card_and_push, log_and_save_train_metrics, save_model_without_push


logger = logging.getLogger(__name__)


def rerank_frame(
    reranker: Reranker,
    frame: pd.DataFrame,
    top_k: int | None = None,
    window: int | None = None,
    stride: int | None = None,
    blend_weight: float | None = None,
    batch_size: int | None = None,
) -> np.ndarray:
    """Reranked candidate ids per row: the top `top_k` reordered, the rest after them in the retriever's order.

    Settings default to those saved with the reranker.
    """
    meta = reranker.meta
    top_k = top_k or meta.get("rerank_top_k", 25)
    blend_weight = meta.get("blend_weight", 0.0) if blend_weight is None else blend_weight
    scale = meta.get("retriever_scale", 20.0)
    names = [list(n[:top_k]) for n in frame["candidate_names"]]
    scores = [np.asarray(s[:top_k]) for s in frame["candidate_scores"]]
    queries = frame["query"].tolist()
    if reranker.kind == "listwise":
        orders = rerank_listwise(
            reranker,
            queries,
            names,
            scores,
            window=window or meta.get("window", 20),
            stride=stride or meta.get("stride", 10),
            blend_weight=blend_weight,
            retriever_scale=scale,
            batch_size=batch_size or 8,
        )
    else:
        orders = rerank_pointwise(reranker, queries, names, scores, blend_weight, scale, batch_size or 64)
    return apply_orders(frame["candidate_ids"], orders, top_k)


def apply_orders(candidate_ids: Sequence[Sequence[int]], orders: Sequence[np.ndarray], top_k: int) -> np.ndarray:
    """Reranked ids: each row's first `top_k` in its new order, then the rest in the retriever's order (rows cut to
    the shortest list)."""
    ranked = []
    for ids, order in zip(candidate_ids, orders, strict=True):
        ids = np.asarray(ids)
        ranked.append(np.concatenate([ids[:top_k][order], ids[top_k:]]))
    width = min(len(r) for r in ranked)
    return np.stack([r[:width] for r in ranked])


def rerank_metrics(frame: pd.DataFrame, ranked: np.ndarray, seen: set[int] | None = None) -> dict[str, float]:
    """MAP@25 and recall@25 before (retriever order) and after reranking, seen/unseen misconceptions apart (groups
    without rows are left out)."""
    labelled = frame["MisconceptionId"].notna().to_numpy()
    actual = frame.loc[labelled, "MisconceptionId"].astype(int).tolist()
    lists = {
        "retriever": [list(ids) for ids, keep in zip(frame["candidate_ids"], labelled, strict=True) if keep],
        "reranked": [list(row) for row, keep in zip(ranked, labelled, strict=True) if keep],
    }
    metrics: dict[str, float] = {}
    for name, rows in lists.items():
        scores = retrieval_metrics(actual, rows, seen, ks=(25,))
        for group in ("", "seen_", "unseen_"):
            if scores.get(f"{group}rows"):
                metrics[f"{group}rows"] = scores[f"{group}rows"]
                for metric in ("map@25", "recall@25"):
                    metrics[f"{group}{name}_{metric}"] = scores[f"{group}{metric}"]
    metrics.setdefault("rows", 0)
    return metrics


def plot_rerank_frame(
    frame: pd.DataFrame, ranked: np.ndarray, metrics: dict[str, float], seen: set[int] | None, out_dir: Path
) -> list[Path]:
    """The Eedi plots of the labelled rows: seen/unseen bars before/after reranking, per-row AP@25 of both orders."""
    labelled = frame["MisconceptionId"].notna().to_numpy()
    rankings = {
        "retriever": [list(ids) for ids, keep in zip(frame["candidate_ids"], labelled, strict=True) if keep],
        "reranked": [list(row) for row, keep in zip(ranked, labelled, strict=True) if keep],
    }
    actual = frame.loc[labelled, "MisconceptionId"].astype(int).tolist()
    return plot_eedi(metrics, actual, rankings, out_dir, seen)


# ---------------------------------------------------------------------------------------------------------------
# Training (scripts/train_reranker.py)
# ---------------------------------------------------------------------------------------------------------------
def finalize_reranker(
    trainer, train_result, reranker: Reranker, meta: dict[str, Any], eval_frame: pd.DataFrame | None, training_args
) -> dict[str, float]:
    """Save the model and its metadata, rerank the held-out fold (MAP@25 before/after), plot training and evaluation
    (`<output_dir>/plots/`), write the card, push."""
    log_and_save_train_metrics(trainer, train_result, int(meta["train_rows"]))
    save_model_without_push(trainer, training_args.output_dir)
    output_dir = Path(training_args.output_dir)
    metrics: dict[str, float] = {}
    if trainer.is_world_process_zero():
        if reranker.tokenizer is not None:
            reranker.tokenizer.save_pretrained(output_dir)
        write_reranker_meta(output_dir, meta)
        if training_args.final_eval and eval_frame is not None and len(eval_frame):
            if training_args.final_eval_max_rows:
                eval_frame = eval_frame.iloc[: training_args.final_eval_max_rows]
            reranker.model.eval()
            ranked = rerank_frame(reranker, eval_frame, batch_size=training_args.per_device_eval_batch_size)
            metrics = {
                f"eval_{k}": v
                for k, v in rerank_metrics(eval_frame, ranked, set(meta["seen_misconception_ids"])).items()
            }
            trainer.log_metrics("eval", metrics)
            trainer.save_metrics("eval", metrics)
            with atomic_path(output_dir / "eval_predictions.csv") as tmp:
                submission_frame(eval_frame["QuestionId_Answer"].tolist(), ranked).to_csv(tmp, index=False)
            plot_rerank_frame(eval_frame, ranked, metrics, set(meta["seen_misconception_ids"]), output_dir / PLOTS_DIR)
        plot_training_curves(trainer.state.log_history, output_dir / PLOTS_DIR)
        logger.info("Plots written to %s", output_dir / PLOTS_DIR)
        if meta["reranker_type"] == "listwise":  # the cross-encoder writes its card (README.md) when saved
            trainer.create_model_card(model_name=output_dir.name, tags=["misconceptions", "eedi", "reranker"])
        link_plots_in_card(output_dir)
    card_and_push(
        trainer,
        training_args,
        f"Eedi {meta['reranker_type']} reranker, eval MAP@25 {metrics.get('eval_reranked_map@25', 0):.4f}",
        task=f"Eedi misconception reranking ({meta['reranker_type']}) of a retriever's candidates",
        base_model=meta.get("base_model"),
        dataset=meta.get("dataset"),
        metrics=metrics,
        usage="python scripts/rerank.py --model MODEL --candidates CANDIDATES --output_csv reranked.csv",
        tags=["eedi", "reranker"],
        library_name="sentence-transformers" if meta["reranker_type"] == "pointwise" else "transformers",
    )
    return metrics


# ---------------------------------------------------------------------------------------------------------------
# Command-line helpers shared by scripts/rerank.py and scripts/predict_eedi.py
# ---------------------------------------------------------------------------------------------------------------
def add_rerank_arguments(parser: argparse.ArgumentParser) -> None:
    """The reranking options shared with predict_eedi.py (unset: the reranker's saved settings)."""
    parser.add_argument("--window", type=int, default=None, help="listwise: candidates per prompt (default: saved)")
    parser.add_argument("--stride", type=int, default=None, help="listwise: step between windows (default: saved)")
    parser.add_argument("--rerank_top_k", type=int, default=None, help="candidates reranked (default: saved)")
    parser.add_argument(
        "--blend_weight", type=float, default=None, help="weight of the retriever's score, 0-1 (default: saved)"
    )
    parser.add_argument("--batch_size", type=int, default=None, help="prompts or pairs per forward pass")


def check_rerank_arguments(args: argparse.Namespace) -> None:
    """Bad option values fail before any model loads."""
    if args.blend_weight is not None and not 0.0 <= args.blend_weight <= 1.0:
        raise InputError(f"--blend_weight must be between 0 and 1, got {args.blend_weight}")
    for name in ("window", "stride", "rerank_top_k", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name} must be at least 1, got {value}")


def write_rerank_outputs(
    candidates: pd.DataFrame, ranked: np.ndarray, output_csv: Path, seen: set[int] | None
) -> dict:
    """The submission, and with labels the before/after metrics JSON and plots (`<stem>_plots/`); returns the
    metrics."""
    with atomic_path(output_csv) as tmp:
        submission_frame(candidates["QuestionId_Answer"].tolist(), ranked).to_csv(tmp, index=False)
    print(f"Wrote {len(candidates)} rows to {output_csv}")  # noqa: T201
    if "MisconceptionId" not in candidates or candidates["MisconceptionId"].isna().all():
        return {}
    metrics = rerank_metrics(candidates, ranked, seen)
    write_json(output_csv.with_name(output_csv.stem + "_metrics.json"), metrics)
    line = (
        f"MAP@25 {metrics['retriever_map@25']:.4f} -> {metrics['reranked_map@25']:.4f} after reranking, "
        f"recall@25 {metrics['retriever_recall@25']:.4f} -> {metrics['reranked_recall@25']:.4f} on {metrics['rows']} rows"
    )
    if "unseen_rows" in metrics and "seen_rows" in metrics:
        line += (
            f"; seen {metrics['seen_retriever_map@25']:.4f} -> {metrics['seen_reranked_map@25']:.4f}, "
            f"unseen {metrics['unseen_retriever_map@25']:.4f} -> {metrics['unseen_reranked_map@25']:.4f}"
        )
    print(line)  # noqa: T201
    plots_dir = prediction_plots_dir(output_csv)
    plot_rerank_frame(candidates, ranked, metrics, seen, plots_dir)
    print(f"Plots in {plots_dir}")  # noqa: T201
    return metrics


def rerank_and_write(reranker: Reranker, candidates: pd.DataFrame, args: argparse.Namespace, output_csv: Path) -> dict:
    """Rerank with the command-line options (unset: the reranker's saved settings), then write the submission and,
    with labels, the before/after metrics (seen/unseen by the reranker's training misconceptions)."""
    ranked = rerank_frame(
        reranker,
        candidates,
        top_k=args.rerank_top_k,
        window=args.window,
        stride=args.stride,
        blend_weight=args.blend_weight,
        batch_size=args.batch_size,
    )
    seen = set(reranker.meta["seen_misconception_ids"]) if "seen_misconception_ids" in reranker.meta else None
    return write_rerank_outputs(candidates, ranked, output_csv, seen)
