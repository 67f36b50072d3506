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
"""MAP@K, the competitions' metric, as pure functions shared by scripts, the evaluate module and tests."""

from collections.abc import Hashable, Sequence

import numpy as np


def average_precision_at_k(actual: Hashable, predicted: Sequence[Hashable], k: int) -> float:
    """AP@K with one relevant item (both competitions): 1/rank of the first hit in the top K, else 0.

    Repeated predictions count once, at their first position, as in the Kaggle metric.
    """
    seen: set = set()
    rank = 0
    for item in predicted:
        if item in seen:
            continue
        seen.add(item)
        rank += 1
        if rank > k:
            break
        if item == actual:
            return 1.0 / rank
    return 0.0


def map_at_k(actuals: Sequence[Hashable], predictions: Sequence[Sequence[Hashable]], k: int = 3) -> float:
    """Mean of AP@K over rows; `predictions[i]` is the ranked list for `actuals[i]`."""
    if len(actuals) != len(predictions):
        raise ValueError(f"map_at_k: {len(actuals)} references but {len(predictions)} predictions.")
    if k < 1:
        raise ValueError(f"map_at_k: k must be >= 1, got {k}.")
    if len(actuals) == 0:
        return 0.0
    return float(np.mean([average_precision_at_k(a, p, k) for a, p in zip(actuals, predictions, strict=True)]))


def recall_at_k(actuals: Sequence[Hashable], predictions: Sequence[Sequence[Hashable]], k: int) -> float:
    """Share of rows whose relevant item is in the top K."""
    if len(actuals) == 0:
        return 0.0
    return float(np.mean([a in list(p)[:k] for a, p in zip(actuals, predictions, strict=True)]))


def map_at_k_from_scores(labels: np.ndarray, scores: np.ndarray, k: int = 3) -> float:
    """MAP@K from a score matrix (rows x classes) and integer labels; ties broken by the lower class index."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hits = top == np.asarray(labels)[:, None]
    ranks = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)
    return float(np.mean(np.where(ranks > 0, 1.0 / np.maximum(ranks, 1), 0.0))) if len(ranks) else 0.0
