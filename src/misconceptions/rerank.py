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

Two rerankers share one interface:
- listwise (the seed's exp015): a causal LM sees the query and a lettered list of candidates and names the right
  letter. Trained with TRL's `SFTTrainer` on conversational prompt/completion rows (loss on the completion only);
  scored in one forward pass from the logits of the letter tokens at the answer position, with RankGPT-style
  sliding windows (back to front) when there are more candidates than one prompt holds.
- pointwise: a sentence-transformers `CrossEncoder` scoring (query, description) pairs, trained with the retriever's
  hard negatives.
Both turn their scores into log-probabilities over the candidates they see and may blend them with the retriever's
(`blend_weight`), whose cosine scores become log-probabilities at the retriever's training scale.
"""

import argparse
import itertools
import json
import logging
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from scipy.special import log_softmax
from tqdm.auto import tqdm

from .errors import InputError
from .io_utils import atomic_path, write_json
from .model_utils import (
    device_map_for_quantized,
    keep_bnb_cpu_weights_trainable,
    load_model_or_adapter,
    resolve_model_path,
    torch_dtype,
)


logger = logging.getLogger(__name__)

RERANKER_META = "misconceptions_reranker.json"
RERANKER_TYPES = ("listwise", "pointwise")
OPTION_LABELS = string.ascii_uppercase  # single tokens in the Llama/Qwen/SmolLM2 vocabularies (checked at load)
LISTWISE_INSTRUCTION = (
    "Below is a math question with a student's incorrect answer, then a list of misconceptions. Which misconception "
    "led to the incorrect answer? Reply with its letter only."
)
CANDIDATE_COLUMNS = ("QuestionId_Answer", "query", "candidate_ids", "candidate_scores")


# ---------------------------------------------------------------------------------------------------------------
# Candidates
# ---------------------------------------------------------------------------------------------------------------
def read_candidates(path: str, names: dict[int, str] | None = None) -> pd.DataFrame:
    """Load candidates written by `retrieve.py --candidates_out` and check them; fill `candidate_names` from `names`.

    Every row needs a non-empty candidate list with one score per id; with `names` (the misconception mapping),
    every candidate id and every labelled MisconceptionId must be in it. Errors name the rows.
    """
    from .retrieval import load_candidates

    frame = load_candidates(path, required=CANDIDATE_COLUMNS)
    frame["candidate_ids"] = [[int(i) for i in ids] for ids in frame["candidate_ids"]]
    frame["candidate_scores"] = [np.asarray(s, dtype=np.float32) for s in frame["candidate_scores"]]
    empty = [key for key, ids in zip(frame["QuestionId_Answer"], frame["candidate_ids"], strict=True) if not ids]
    if empty:
        raise InputError(f"{path}: {len(empty)} rows have an empty candidate list (e.g. {', '.join(empty[:5])})")
    uneven = [
        key
        for key, ids, scores in zip(
            frame["QuestionId_Answer"], frame["candidate_ids"], frame["candidate_scores"], strict=True
        )
        if len(ids) != len(scores)
    ]
    if uneven:
        raise InputError(
            f"{path}: candidate_ids and candidate_scores differ in length in rows {', '.join(uneven[:5])}"
        )
    if names is not None:
        for key, ids in zip(frame["QuestionId_Answer"], frame["candidate_ids"], strict=True):
            unknown = [i for i in ids if i not in names]
            if unknown:
                raise InputError(
                    f"{path}: row {key} references misconception ids not in the mapping: {unknown[:5]} "
                    "(candidates and misconception_mapping.csv must come from the same data)"
                )
        if "MisconceptionId" in frame.columns:
            gold = frame["MisconceptionId"].dropna().astype(int)
            bad = frame.loc[gold.index[~gold.isin(list(names))], "QuestionId_Answer"].tolist()
            if bad:
                raise InputError(f"{path}: rows {', '.join(bad[:5])} are labelled with unknown misconception ids")
        frame["candidate_names"] = [[names[i] for i in ids] for ids in frame["candidate_ids"]]
    elif "candidate_names" not in frame.columns:
        raise InputError(f"{path}: candidates lack 'candidate_names'; give the misconception mapping too")
    else:
        frame["candidate_names"] = [list(n) for n in frame["candidate_names"]]
    return frame


def attach_folds(candidates: pd.DataFrame, pairs: pd.DataFrame, source: str) -> pd.DataFrame:
    """Join the dataset's labels and folds onto the candidates (by QuestionId_Answer).

    Unlabelled candidate rows (wrong answers without a misconception) are left out; a labelled row that the dataset
    does not have means the two come from different data, and fails.
    """
    keyed = pairs.set_index("QuestionId_Answer")
    present = candidates["QuestionId_Answer"].isin(keyed.index).to_numpy()
    labelled = candidates["MisconceptionId"].notna().to_numpy() if "MisconceptionId" in candidates else present
    stray = candidates.loc[~present & labelled, "QuestionId_Answer"].tolist()
    if stray:
        raise InputError(f"{source}: {len(stray)} labelled candidate rows are not in the dataset (e.g. {stray[:3]})")
    if not present.any():
        raise InputError(f"{source}: no candidate row matches the dataset's QuestionId_Answer keys")
    if (~present).any():
        logger.info("%d unlabelled candidate rows left out", int((~present).sum()))
    out = candidates[present].drop(columns=[c for c in ("MisconceptionId", "fold") if c in candidates.columns])
    out = out.reset_index(drop=True)
    out["MisconceptionId"] = keyed.loc[out["QuestionId_Answer"], "MisconceptionId"].astype(int).to_numpy()
    out["fold"] = keyed.loc[out["QuestionId_Answer"], "fold"].astype(int).to_numpy()
    return out


def extra_candidate_rows(paths: list[str], weights: list[float], names: dict[int, str], seed: int) -> pd.DataFrame:
    """Labelled rows of other candidate sets (retrieve.py --candidates_out over e.g. synthetic questions), each
    sampled by its weight, for training only (fold -1, `source` = the path)."""
    from .eedi import sample_by_weight

    frames = []
    for path, weight in zip(paths, weights, strict=True):
        frame = read_candidates(path, names)
        if "MisconceptionId" not in frame.columns or frame["MisconceptionId"].isna().all():
            raise InputError(f"{path}: no labelled rows; retrieve over a CSV with misconception ids to train on it")
        frame = frame[frame["MisconceptionId"].notna()].reset_index(drop=True)
        frame["MisconceptionId"] = frame["MisconceptionId"].astype(int)
        frame["fold"], frame["source"] = -1, path
        frames.append(sample_by_weight(frame, weight, seed))
        logger.info("Extra training rows: %d from %s (weight %s)", len(frames[-1]), path, weight)
    return pd.concat(frames, ignore_index=True)


def blend(reranker_logprobs: np.ndarray, retriever_scores: np.ndarray, weight: float, scale: float) -> np.ndarray:
    """(1 - w) * reranker log-probs + w * retriever log-probs (softmax of scale * cosine) over the same candidates."""
    if weight == 0.0:
        return reranker_logprobs
    return (1.0 - weight) * reranker_logprobs + weight * log_softmax(
        scale * np.asarray(retriever_scores, dtype=np.float64)
    )


# ---------------------------------------------------------------------------------------------------------------
# Listwise: prompts, SFT rows, windows and the option-logit scorer
# ---------------------------------------------------------------------------------------------------------------
def listwise_messages(query: str, names: Sequence[str]) -> list[dict[str, str]]:
    """The user turn: instruction, query, and the candidates lettered A, B, C, ..."""
    if len(names) > len(OPTION_LABELS):
        raise InputError(f"a listwise prompt holds at most {len(OPTION_LABELS)} candidates, got {len(names)}")
    options = "\n".join(f"{OPTION_LABELS[i]}. {name}" for i, name in enumerate(names))
    return [{"role": "user", "content": f"{LISTWISE_INSTRUCTION}\n\n{query}\n\nMisconceptions:\n{options}"}]


def prompt_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of the prompt up to the answer position, exactly as TRL's SFTTrainer tokenizes a prompt."""
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(encoded["input_ids"])


def option_token_ids(tokenizer, n: int) -> list[int]:
    """Token id of each option letter as the first token of the answer; every letter must be a single token."""
    ids = []
    for label in OPTION_LABELS[:n]:
        tokens = tokenizer.encode(label, add_special_tokens=False)
        if len(tokens) != 1:
            raise InputError(f"option label '{label}' is {len(tokens)} tokens for this tokenizer; it must be one")
        ids.append(tokens[0])
    return ids


def fit_candidates(tokenizer, query: str, names: Sequence[str], max_length: int) -> int:
    """How many leading candidates fit in `max_length` tokens with the answer; the query is never cut.

    0 means the query alone (with the instruction and one candidate) does not fit: training leaves such a row out,
    inference keeps the retriever's order for it, and both say how many rows that was.
    """
    return fit_prompt(tokenizer, query, names, max_length)[0]


def fit_prompt(tokenizer, query: str, names: Sequence[str], max_length: int) -> tuple[int, list[int]]:
    """`fit_candidates`, and the token ids of the prompt it settled on (none when 0), so they are not made twice."""
    prompts: dict[int, list[int]] = {}

    def fits(n: int) -> bool:
        prompts[n] = prompt_ids(tokenizer, listwise_messages(query, names[:n]))
        return len(prompts[n]) + 2 <= max_length  # answer letter + end of turn

    if fits(len(names)):
        return len(names), prompts[len(names)]
    if not fits(1):
        return 0, []
    low, high = 1, len(names)  # low fits, high does not
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low, prompts[low]


def listwise_sft_rows(
    frame: pd.DataFrame, names: dict[int, str], num_candidates: int, tokenizer, max_length: int, seed: int = 42
) -> tuple[Dataset, int]:
    """Conversational prompt/completion rows: the top `num_candidates` candidates (the gold one put in place of the
    last when retrieval missed it), shuffled, lettered; the completion is the gold letter.

    Candidates that would push the prompt past `max_length` are dropped (never the gold one, never the query); a
    row whose query alone is too long is left out. Returns the dataset and how many rows lost candidates or were
    left out.
    """
    rng = np.random.default_rng(seed)
    prompts, completions, truncated, too_long = [], [], 0, 0
    for query, ids, cand_names, gold in zip(
        frame["query"], frame["candidate_ids"], frame["candidate_names"], frame["MisconceptionId"], strict=True
    ):
        pool = list(zip(ids, cand_names, strict=True))[:num_candidates]
        gold = int(gold)
        if all(i != gold for i, _ in pool):
            pool[-1] = (gold, names[gold])
        order = rng.permutation(len(pool))
        pool = [pool[j] for j in order]
        kept = fit_candidates(tokenizer, query, [n for _, n in pool], max_length)
        if kept == 0:
            too_long += 1
            continue
        if kept < len(pool):
            truncated += 1
            gold_at = next(j for j, (i, _) in enumerate(pool) if i == gold)
            if gold_at >= kept:  # keep the gold candidate: swap it into the kept part
                pool[kept - 1], pool[gold_at] = pool[gold_at], pool[kept - 1]
            pool = pool[:kept]
        letter = OPTION_LABELS[next(j for j, (i, _) in enumerate(pool) if i == gold)]
        prompts.append(listwise_messages(query, [n for _, n in pool]))
        completions.append([{"role": "assistant", "content": letter}])
    if truncated or too_long:
        logger.warning(
            "Listwise prompts over max_length %d: %d of %d rows lost candidates (the query and the gold one are "
            "kept); %d rows whose query alone is too long were left out",
            max_length,
            truncated,
            len(frame),
            too_long,
        )
    return Dataset.from_dict({"prompt": prompts, "completion": completions}), truncated + too_long


def window_starts(n: int, window: int, stride: int) -> list[int]:
    """Start of each window, back to front (RankGPT): the last window ends at n, the first starts at 0, and
    consecutive windows overlap by window - stride, so every candidate is scored and good ones can climb to the top.
    """
    if window < 2 or stride < 1:
        raise InputError(f"window must be >= 2 and stride >= 1, got window {window}, stride {stride}")
    if stride > window:
        raise InputError(
            f"stride {stride} is larger than window {window}: candidates between windows would be skipped"
        )
    if n <= window:  # a window larger than the list: one window over all of it
        return [0]
    starts = list(range(n - window, 0, -stride))
    return [*starts, 0]


@dataclass
class Reranker:
    """A loaded reranker: `kind` is 'listwise' (causal LM + tokenizer) or 'pointwise' (CrossEncoder)."""

    kind: str
    model: Any
    tokenizer: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


@torch.inference_mode()
def option_logprobs(model, tokenizer, prompts: list[list[int]], n_options: list[int]) -> list[np.ndarray]:
    """Log-softmax over the first n option letters at the answer position, one forward pass per prompt batch."""
    option_ids = option_token_ids(tokenizer, max(n_options))
    device = next(model.parameters()).device
    batch = tokenizer.pad({"input_ids": prompts}, padding=True, return_tensors="pt", padding_side="left")
    logits = model(
        input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device), logits_to_keep=1
    ).logits[:, -1, :]
    chosen = logits[:, option_ids].float().cpu().numpy()
    return [log_softmax(row[:n].astype(np.float64)) for row, n in zip(chosen, n_options, strict=True)]


def rerank_listwise(
    reranker: Reranker,
    queries: Sequence[str],
    candidate_names: Sequence[Sequence[str]],
    retriever_scores: Sequence[np.ndarray],
    window: int,
    stride: int,
    blend_weight: float = 0.0,
    retriever_scale: float = 20.0,
    batch_size: int = 8,
    max_length: int | None = None,
) -> list[np.ndarray]:
    """New order (indices into each candidate list) by sliding windows, back to front, batched across queries."""
    orders = [np.arange(len(names)) for names in candidate_names]
    starts = [window_starts(len(names), window, stride) for names in candidate_names]
    max_length = max_length or reranker.meta.get("max_length") or 4096
    rounds = max(len(s) for s in starts)
    clipped = 0
    progress = tqdm(total=sum(len(s) for s in starts), desc="Listwise windows", unit="window")
    for r in range(rounds):
        active = [q for q in range(len(queries)) if r < len(starts[q])]
        for chunk_start in range(0, len(active), batch_size):
            chunk = active[chunk_start : chunk_start + batch_size]
            prompts, spans = [], []
            for q in chunk:
                lo = starts[q][r]
                members = orders[q][lo : lo + window]
                names = [candidate_names[q][j] for j in members]
                kept, ids = fit_prompt(reranker.tokenizer, queries[q], names, max_length)
                clipped += kept < len(names)
                if kept < 2:  # nothing to compare (or the query alone is too long): the window keeps its order
                    continue
                prompts.append(ids)
                spans.append((q, lo, members[:kept]))
            if not prompts:
                progress.update(len(chunk))
                continue
            logprobs = option_logprobs(reranker.model, reranker.tokenizer, prompts, [len(m) for _, _, m in spans])
            for (q, lo, members), lp in zip(spans, logprobs, strict=True):
                scores = blend(lp, np.asarray(retriever_scores[q])[members], blend_weight, retriever_scale)
                orders[q][lo : lo + len(members)] = members[np.argsort(-scores, kind="stable")]
            progress.update(len(chunk))
    progress.close()
    if clipped:
        logger.warning(
            "%d windows were over max_length %d: their last candidates (all of them when the query alone is too "
            "long) kept their order",
            clipped,
            max_length,
        )
    return orders


# ---------------------------------------------------------------------------------------------------------------
# Pointwise: cross-encoder training rows and scorer
# ---------------------------------------------------------------------------------------------------------------
def pointwise_training_rows(frame: pd.DataFrame, names: dict[int, str], num_negatives: int) -> Dataset:
    """(query, positive, negative_1..n) rows: the gold description and the highest-ranked wrong candidates."""
    rows: dict[str, list[str]] = {"query": [], "positive": []} | {
        f"negative_{j + 1}": [] for j in range(num_negatives)
    }
    skipped = 0
    for query, ids, cand_names, gold in zip(
        frame["query"], frame["candidate_ids"], frame["candidate_names"], frame["MisconceptionId"], strict=True
    ):
        wrong = [n for i, n in zip(ids, cand_names, strict=True) if i != int(gold)]
        if len(wrong) < num_negatives:
            skipped += 1
            continue
        rows["query"].append(query)
        rows["positive"].append(names[int(gold)])
        for j in range(num_negatives):
            rows[f"negative_{j + 1}"].append(wrong[j])
    if skipped:
        logger.warning("%d rows have fewer than %d wrong candidates and were skipped", skipped, num_negatives)
    return Dataset.from_dict(rows)


def pointwise_logprobs(
    reranker: Reranker, queries: Sequence[str], candidate_names: Sequence[Sequence[str]], batch_size: int = 64
) -> list[np.ndarray]:
    """The cross-encoder's logits for every (query, candidate) pair, log-softmaxed over each query's candidates."""
    pairs = [(q, name) for q, names in zip(queries, candidate_names, strict=True) for name in names]
    logits = reranker.model.predict(
        pairs, batch_size=batch_size, activation_fn=torch.nn.Identity(), show_progress_bar=True
    )
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    bounds = np.cumsum([0, *(len(names) for names in candidate_names)])
    return [log_softmax(logits[lo:hi]) for lo, hi in itertools.pairwise(bounds)]


def orders_from_logprobs(
    logprobs: Sequence[np.ndarray], retriever_scores: Sequence[np.ndarray], blend_weight: float, retriever_scale: float
) -> list[np.ndarray]:
    """Each candidate list's new order by the (blended) log-probabilities, best first; ties keep retrieval order."""
    return [
        np.argsort(-blend(lp, np.asarray(retrieved), blend_weight, retriever_scale), kind="stable")
        for lp, retrieved in zip(logprobs, retriever_scores, strict=True)
    ]


def rerank_pointwise(
    reranker: Reranker,
    queries: Sequence[str],
    candidate_names: Sequence[Sequence[str]],
    retriever_scores: Sequence[np.ndarray],
    blend_weight: float = 0.0,
    retriever_scale: float = 20.0,
    batch_size: int = 64,
) -> list[np.ndarray]:
    """New order of each candidate list by the cross-encoder (log-softmaxed per query, then blended)."""
    logprobs = pointwise_logprobs(reranker, queries, candidate_names, batch_size)
    return orders_from_logprobs(logprobs, retriever_scores, blend_weight, retriever_scale)


# ---------------------------------------------------------------------------------------------------------------
# Both: load, rerank a candidate frame, score
# ---------------------------------------------------------------------------------------------------------------
def load_reranker(model_dir: str) -> Reranker:
    """Load a folder written by train_reranker.py: a CrossEncoder, or a causal LM (full or LoRA on a 4-bit base)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model_dir)
    meta_file = path / RERANKER_META
    if not meta_file.is_file():
        raise InputError(f"{model_dir}: no {RERANKER_META}; expected a folder written by scripts/train_reranker.py")
    meta = json.loads(meta_file.read_text())
    if meta.get("reranker_type") == "pointwise":
        from sentence_transformers import CrossEncoder

        model = CrossEncoder(str(path), max_length=meta.get("max_length"))
        model.eval()
        return Reranker("pointwise", model, meta=meta)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = load_model_or_adapter(AutoModelForCausalLM, str(path), meta)
    model.eval()
    return Reranker("listwise", model, tokenizer, meta)


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
    from .retrieval import retrieval_metrics

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
    from .plots import plot_eedi

    labelled = frame["MisconceptionId"].notna().to_numpy()
    rankings = {
        "retriever": [list(ids) for ids, keep in zip(frame["candidate_ids"], labelled, strict=True) if keep],
        "reranked": [list(row) for row, keep in zip(ranked, labelled, strict=True) if keep],
    }
    actual = frame.loc[labelled, "MisconceptionId"].astype(int).tolist()
    return plot_eedi(metrics, actual, rankings, out_dir, seen)


def write_reranker_meta(output_dir: str, meta: dict[str, Any]) -> None:
    write_json(Path(output_dir) / RERANKER_META, meta)


# ---------------------------------------------------------------------------------------------------------------
# Training helpers (scripts/train_reranker.py)
# ---------------------------------------------------------------------------------------------------------------
def build_listwise_model(model_args, training_args):
    """(causal LM, tokenizer, LoRA config or None): optional 4-bit base; SFTTrainer applies the LoRA config."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import get_peft_config, get_quantization_config

    path = resolve_model_path(model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=model_args.model_revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise InputError(f"{model_args.model_name_or_path}: the listwise reranker needs a tokenizer chat template")
    option_token_ids(tokenizer, len(OPTION_LABELS))  # fail early if a letter is not one token
    quantization_config = get_quantization_config(model_args)
    peft_config = get_peft_config(model_args)
    if quantization_config is not None and peft_config is None:
        raise InputError("a 4-bit or 8-bit base model can only be trained with LoRA: set use_peft: true")
    if peft_config is not None and peft_config.task_type != "CAUSAL_LM":
        raise InputError(f"lora_task_type must be CAUSAL_LM for the listwise reranker, got '{peft_config.task_type}'")
    model = AutoModelForCausalLM.from_pretrained(
        path,
        revision=model_args.model_revision,
        dtype=torch_dtype(model_args.dtype),
        attn_implementation=model_args.attn_implementation,
        quantization_config=quantization_config,
        device_map=device_map_for_quantized() if quantization_config is not None else None,
    )
    keep_bnb_cpu_weights_trainable(model)
    return model, tokenizer, peft_config


def build_cross_encoder(model_args, training_args):
    """A CrossEncoder with one output (a relevance logit) over any HF encoder."""
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder import CrossEncoderModelCardData

    return CrossEncoder(
        resolve_model_path(model_args.model_name_or_path),
        num_labels=1,
        max_length=training_args.max_length,
        revision=model_args.model_revision,
        device="cpu" if training_args.use_cpu else None,
        model_kwargs={"dtype": torch_dtype(model_args.dtype)},
        model_card_data=CrossEncoderModelCardData(
            language="en", license="apache-2.0", model_name=f"{Path(training_args.output_dir).name}: Eedi reranker"
        ),
    )


def cross_encoder_args(training_args):
    """The recipe's TrainingArguments settings as CrossEncoderTrainingArguments (what CrossEncoderTrainer needs)."""
    import dataclasses

    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments
    from transformers import TrainingArguments

    names = [f.name for f in dataclasses.fields(TrainingArguments) if f.init]
    kwargs = {name: getattr(training_args, name) for name in names}
    kwargs["report_to"] = list(training_args.report_to) or "none"
    for name in ("accelerator_config",):  # objects after __post_init__: pass their settings back as a dict
        if dataclasses.is_dataclass(kwargs[name]):
            kwargs[name] = dataclasses.asdict(kwargs[name])
    return CrossEncoderTrainingArguments(**kwargs)


def reranking_evaluator(frame: pd.DataFrame, names: dict[int, str], top_k: int, batch_size: int):
    """sentence-transformers' reranking evaluator on the held-out rows: the retriever's top `top_k`, gold kept only
    if retrieved (so its MRR@top_k is the reranked MAP@top_k with one right answer per row)."""
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

    samples = [
        {"query": query, "positive": [names[int(gold)]], "documents": list(cands[:top_k])}
        for query, cands, gold in zip(frame["query"], frame["candidate_names"], frame["MisconceptionId"], strict=True)
    ]
    return CrossEncoderRerankingEvaluator(
        samples, at_k=top_k, always_rerank_positives=False, name="heldout", batch_size=batch_size, write_csv=False
    )


def finalize_reranker(
    trainer, train_result, reranker: Reranker, meta: dict[str, Any], eval_frame: pd.DataFrame | None, training_args
) -> dict[str, float]:
    """Save the model and its metadata, rerank the held-out fold (MAP@25 before/after), plot training and evaluation
    (`<output_dir>/plots/`), write the card, push."""
    from .plots import PLOTS_DIR, link_plots_in_card, plot_training_curves
    from .retrieval import submission_frame
    from .training import card_and_push, log_and_save_train_metrics, save_model_without_push

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
    from .plots import prediction_plots_dir
    from .retrieval import submission_frame

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
