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

import numpy as np
import pandas as pd

from .candidates import submission_frame
from .configs import CPU_BF16_CHOICES, RERANK_SCOPES
from .errors import InputError
from .io_utils import atomic_path, write_json
from .listwise import rerank_listwise
from .plots import PLOTS_DIR, plot_eedi, prediction_plots_dir
from .pointwise import rerank_pointwise
from .rerank_model import Reranker, load_reranker
from .retrieval import retrieval_metrics
from .settings import union_of_seen
from .speed import use_cpu_bf16
from .training import RunCard, finalize_run


logger = logging.getLogger(__name__)


def rerank_frame(
    reranker: Reranker,
    frame: pd.DataFrame,
    top_k: int | None = None,
    window: int | None = None,
    stride: int | None = None,
    blend_weight: float | None = None,
    batch_size: int | None = None,
    rerank_scope: str | None = None,
    cpu_bf16: str | None = None,
) -> np.ndarray:
    """Reranked candidate ids per row: the top `top_k` reordered, the rest after them in the retriever's order.
    With `rerank_scope` "seen", only the misconceptions the reranker was trained on move (`keep_unseen_in_place`).
    `cpu_bf16` ('auto', 'true', 'false'): whether the cross-encoder scores under bf16 autocast (`speed.use_cpu_bf16`).

    Settings default to those saved with the reranker.
    """
    settings = reranker.settings
    top_k = top_k or settings.rerank_top_k
    blend_weight = settings.blend_weight if blend_weight is None else blend_weight
    rerank_scope = rerank_scope or settings.rerank_scope
    if rerank_scope == "seen" and settings.seen_misconception_ids is None:
        raise InputError(
            f"rerank_scope 'seen' needs the reranker's training misconceptions (seen_misconception_ids in "
            f"{type(settings).FILE}); this reranker has none saved: use rerank_scope 'all'"
        )
    scale = settings.retriever_scale
    names = [list(n[:top_k]) for n in frame["candidate_names"]]
    scores = [np.asarray(s[:top_k]) for s in frame["candidate_scores"]]
    queries = frame["query"].tolist()
    if reranker.kind == "listwise":
        orders = rerank_listwise(
            reranker,
            queries,
            names,
            scores,
            window=window or settings.window,
            stride=stride or settings.stride,
            blend_weight=blend_weight,
            retriever_scale=scale,
            batch_size=batch_size or 8,
        )
    else:
        bf16 = use_cpu_bf16(cpu_bf16 or settings.cpu_bf16)
        orders = rerank_pointwise(reranker, queries, names, scores, blend_weight, scale, batch_size or 64, bf16)
    if rerank_scope == "seen":
        orders = keep_unseen_in_place(frame["candidate_ids"], orders, settings.seen_misconception_ids)
    return apply_orders(frame["candidate_ids"], orders, top_k)


def keep_unseen_in_place(
    candidate_ids: Sequence[Sequence[int]], orders: Sequence[np.ndarray], seen: Sequence[int]
) -> list[np.ndarray]:
    """The orders changed so that only the candidates in `seen` move: every other candidate keeps its retrieved
    position, and the seen ones fill the positions seen ones held, in the reranker's order.

    A reranker trained on some misconceptions learns to prefer them; one it never saw keeps the retriever's rank.
    """
    seen_ids = np.asarray(sorted(seen), dtype=np.int64)
    kept = []
    for ids, order in zip(candidate_ids, orders, strict=True):
        order = np.asarray(order)
        is_seen = np.isin(np.asarray(ids[: len(order)], dtype=np.int64), seen_ids)
        new = np.arange(len(order))
        new[is_seen] = order[is_seen[order]]
        kept.append(new)
    return kept


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
    trainer, train_result, reranker: Reranker, eval_frame: pd.DataFrame | None, training_args
) -> dict[str, float]:
    """`finalize_run` for a reranker: its settings (`reranker.settings`), its tokenizer, and MAP@25 before/after
    reranking the held-out fold, as rerank.py computes it."""
    settings = reranker.settings
    seen = set(settings.seen_misconception_ids or [])

    def evaluate(output_dir: Path) -> dict[str, float]:
        if reranker.tokenizer is not None:
            reranker.tokenizer.save_pretrained(output_dir)
        if not training_args.final_eval or eval_frame is None or not len(eval_frame):
            return {}
        frame = (
            eval_frame.iloc[: training_args.final_eval_max_rows] if training_args.final_eval_max_rows else eval_frame
        )
        reranker.model.eval()
        ranked = rerank_frame(reranker, frame, batch_size=training_args.per_device_eval_batch_size)
        metrics = {f"eval_{k}": v for k, v in rerank_metrics(frame, ranked, seen).items()}
        with atomic_path(output_dir / "eval_predictions.csv") as tmp:
            submission_frame(frame["QuestionId_Answer"].tolist(), ranked).to_csv(tmp, index=False)
        plot_rerank_frame(frame, ranked, metrics, seen, output_dir / PLOTS_DIR)
        return metrics

    kind = settings.reranker_type
    card = RunCard(
        title=f"Eedi {kind} reranker",
        task=f"Eedi misconception reranking ({kind}) of a retriever's candidates",
        usage="python scripts/rerank.py --model MODEL --candidates CANDIDATES --output_csv reranked.csv",
        tags=["eedi", "reranker"],
        headline="eval_reranked_map@25",
        headline_label="eval MAP@25",
        library_name="sentence-transformers" if kind == "pointwise" else "transformers",
        # the cross-encoder writes its own card (README.md) when saved
        trainer_card={"tags": ["misconceptions", "eedi", "reranker"]} if kind == "listwise" else None,
    )
    return finalize_run(
        trainer,
        train_result,
        training_args,
        settings=settings,
        num_train_samples=settings.train_rows,
        card=card,
        evaluate=evaluate,
    )


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
    parser.add_argument(
        "--rerank_scope",
        choices=RERANK_SCOPES,
        default=None,
        help="'seen': move only the misconceptions the reranker was trained on, the others keep the retriever's "
        "position; 'all': move every candidate (default: saved)",
    )
    parser.add_argument("--batch_size", type=int, default=None, help="prompts or pairs per forward pass")
    parser.add_argument(
        "--cpu_bf16",
        choices=CPU_BF16_CHOICES,
        default=None,
        help="pointwise, on the CPU: score under bf16 autocast. 'auto': where the CPU computes bf16 natively "
        "(AVX512-BF16 or AMX), fp32 elsewhere; 'true'; 'false' (default: saved, the recipe's cpu_bf16)",
    )


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


def combine_rankings(rankings: Sequence[np.ndarray]) -> np.ndarray:
    """Several rerankers' lists (one per fold model) as one: each candidate by its mean position across the lists
    (a Borda count), ties kept in the first list's order. One list comes back as it is."""
    if len(rankings) == 1:
        return rankings[0]
    width = min(r.shape[1] for r in rankings)
    combined = []
    for row in range(rankings[0].shape[0]):
        first = rankings[0][row, :width]
        positions = [{int(c): i for i, c in enumerate(r[row, :width])} for r in rankings]
        mean = np.array([np.mean([p.get(int(c), width) for p in positions]) for c in first])
        combined.append(first[np.argsort(mean, kind="stable")])
    return np.stack(combined)


def rerank_and_write(
    reranker: Reranker | Sequence[Reranker | str], candidates: pd.DataFrame, args: argparse.Namespace, output_csv: Path
) -> dict:
    """Rerank with the command-line options (unset: the reranker's saved settings), then write the submission and,
    with labels, the before/after metrics (seen/unseen by the reranker's training misconceptions). Several rerankers
    (one per fold; folders are loaded one at a time) combine by `combine_rankings`; their training misconceptions
    together count as seen."""
    rankings, seen_lists = [], []
    for model in [reranker] if isinstance(reranker, Reranker) else list(reranker):
        model = model if isinstance(model, Reranker) else load_reranker(str(model))
        rankings.append(
            rerank_frame(
                model,
                candidates,
                top_k=args.rerank_top_k,
                window=args.window,
                stride=args.stride,
                blend_weight=args.blend_weight,
                batch_size=args.batch_size,
                rerank_scope=args.rerank_scope,
                cpu_bf16=args.cpu_bf16,
            )
        )
        seen_lists.append(model.settings.seen_misconception_ids)
        del model
    return write_rerank_outputs(candidates, combine_rankings(rankings), output_csv, union_of_seen(seen_lists))
