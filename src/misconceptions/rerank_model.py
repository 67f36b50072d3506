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
"""A loaded Eedi reranker of either kind with its saved settings, and the blend of its scores with the retriever's.

Both rerankers (`listwise`, `pointwise`) turn their scores into log-probabilities over the candidates they see and
may blend them with the retriever's (`blend_weight`), whose cosine scores become log-probabilities at the
retriever's training scale. `load_reranker` reads a folder written by scripts/train_reranker.py back, whichever kind
it holds; the modules above this one score with it.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import log_softmax

from .model_utils import load_model_or_adapter
from .settings import RerankerSettings


RERANKER_META = RerankerSettings.FILE


@dataclass
class Reranker:
    """A loaded reranker: `kind` is 'listwise' (causal LM + tokenizer) or 'pointwise' (CrossEncoder)."""

    kind: str
    model: Any
    tokenizer: Any = None
    settings: RerankerSettings = field(default_factory=RerankerSettings)


def blend(reranker_logprobs: np.ndarray, retriever_scores: np.ndarray, weight: float, scale: float) -> np.ndarray:
    """(1 - w) * reranker log-probs + w * retriever log-probs (softmax of scale * cosine) over the same candidates."""
    if weight == 0.0:
        return reranker_logprobs
    return (1.0 - weight) * reranker_logprobs + weight * log_softmax(
        scale * np.asarray(retriever_scores, dtype=np.float64)
    )


def load_reranker(model_dir: str) -> Reranker:
    """Load a folder written by train_reranker.py: a CrossEncoder, or a causal LM (full or LoRA on a 4-bit base)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model_dir)
    settings = RerankerSettings.load(path)
    if settings.reranker_type == "pointwise":
        from sentence_transformers import CrossEncoder

        model = CrossEncoder(str(path), max_length=settings.max_length)
        model.eval()
        return Reranker("pointwise", model, settings=settings)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = load_model_or_adapter(AutoModelForCausalLM, str(path), settings)
    model.eval()
    return Reranker("listwise", model, tokenizer, settings)
