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
import numpy as np
import pytest

from misconceptions import InputError
from misconceptions.tfidf import TFIDF_FILE, fit_tfidf_classifier, load_tfidf, save_tfidf, tfidf_probs


TEXTS = ["one half is bigger", "one third of the shape", "two thirds shaded", "add the tops", "add both numbers"] * 4
LABELS = ["Correct:NA", "Correct:NA", "Neither:NA", "Misconception:Adding", "Misconception:Adding"] * 4


def test_round_trip_through_skops_keeps_probabilities(tmp_path):
    pipeline = fit_tfidf_classifier(TEXTS, LABELS, seed=0)
    path = save_tfidf(pipeline, tmp_path)
    assert path.name == TFIDF_FILE and path.read_bytes()[:2] == b"PK"  # a skops zip, not a pickle
    reloaded = load_tfidf(tmp_path)
    labels = ["Misconception:Adding", "Correct:NA", "Neither:NA", "Misconception:Unseen"]
    before, after = tfidf_probs(pipeline, TEXTS[:5], labels), tfidf_probs(reloaded, TEXTS[:5], labels)
    np.testing.assert_allclose(before, after)
    assert np.all(after[:, 3] == 0) and np.allclose(after[:, :3].sum(axis=1), 1.0, atol=1e-5)
    assert after[3].argmax() == 0  # "add the tops" -> Misconception:Adding


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match=TFIDF_FILE):
        load_tfidf(tmp_path)
