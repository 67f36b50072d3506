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
import evaluate
import numpy as np
import pytest

from misconceptions import average_precision_at_k, map_at_k, map_at_k_from_scores, recall_at_k

from .conftest import REPO


def test_average_precision_hand_computed():
    assert average_precision_at_k("a", ["a", "b", "c"], k=3) == 1.0
    assert average_precision_at_k("b", ["a", "b", "c"], k=3) == 0.5
    assert average_precision_at_k("c", ["a", "b", "c"], k=3) == pytest.approx(1 / 3)
    assert average_precision_at_k("d", ["a", "b", "c"], k=3) == 0.0
    assert average_precision_at_k("c", ["a", "b", "c"], k=2) == 0.0  # beyond the cut-off
    # A repeated prediction counts once (Kaggle): "b" is at rank 2, not 3.
    assert average_precision_at_k("b", ["a", "a", "b"], k=3) == 0.5


def test_map_at_k_mean_and_errors():
    assert map_at_k(["a", "b", "z"], [["a", "x"], ["x", "b"], ["x", "y"]], k=3) == pytest.approx((1 + 0.5 + 0) / 3)
    assert map_at_k([], [], k=3) == 0.0
    with pytest.raises(ValueError, match="2 references but 1 predictions"):
        map_at_k(["a", "b"], [["a"]], k=3)
    with pytest.raises(ValueError, match="k must be >= 1"):
        map_at_k(["a"], [["a"]], k=0)


def test_recall_at_k():
    assert recall_at_k(["a", "b"], [["x", "a"], ["b"]], k=1) == 0.5
    assert recall_at_k(["a", "b"], [["x", "a"], ["b"]], k=2) == 1.0


def test_scores_version_matches_list_version():
    rng = np.random.default_rng(0)
    scores = rng.random((50, 7))
    labels = rng.integers(0, 7, 50)
    ranked = np.argsort(-scores, axis=1)
    assert map_at_k_from_scores(labels, scores, k=3) == pytest.approx(map_at_k(list(labels), ranked.tolist(), k=3))


def test_evaluate_module_loads_offline(monkeypatch):
    monkeypatch.chdir(REPO)
    metric = evaluate.load("metrics/map_at_k")
    result = metric.compute(predictions=[["a", "b", "c"], ["x", "b", "y"]], references=["a", "b"], k=3)
    assert result == {"map@3": 0.75}
    result = metric.compute(predictions=[["12", "7"], ["3", "4"]], references=["7", "9"], k=25)
    assert result == {"map@25": 0.25}
