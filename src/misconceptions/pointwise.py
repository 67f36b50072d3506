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
"""The pointwise Eedi reranker: a sentence-transformers `CrossEncoder` scoring (query, description) pairs, trained
with the retriever's hard negatives (the top wrong candidates) by `CrossEncoderTrainer`.

Its logits are log-softmaxed over each query's candidates, so they blend with the retriever's scores as the listwise
reranker's do (`rerank_model.blend`).
"""

import itertools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from scipy.special import log_softmax

from .model_utils import resolve_model_path, torch_dtype
from .rerank_model import Reranker, blend
from .speed import bucket_by_length


logger = logging.getLogger(__name__)


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
    reranker: Reranker,
    queries: Sequence[str],
    candidate_names: Sequence[Sequence[str]],
    batch_size: int = 64,
    bf16: bool = False,
) -> list[np.ndarray]:
    """The cross-encoder's logits for every (query, candidate) pair, log-softmaxed over each query's candidates.
    `bf16`: bf16 autocast on the CPU (weights stay fp32; the logits come back as float32)."""
    pairs = [(q, name) for q, names in zip(queries, candidate_names, strict=True) for name in names]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
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
    bf16: bool = False,
) -> list[np.ndarray]:
    """New order of each candidate list by the cross-encoder (log-softmaxed per query, then blended)."""
    logprobs = pointwise_logprobs(reranker, queries, candidate_names, batch_size, bf16)
    return orders_from_logprobs(logprobs, retriever_scores, blend_weight, retriever_scale)


def build_cross_encoder(model_args, training_args):
    """A CrossEncoder with one output (a relevance logit) over any HF encoder."""
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder import CrossEncoderModelCardData

    model = CrossEncoder(
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
    if training_args.length_bucket_size:
        bucket_by_length(model[0].auto_model, training_args.length_bucket_size)
    return model


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
