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
"""A TF-IDF + logistic-regression text classifier, blended with the neural classifier's probabilities.

Word 1-2-grams catch the students' wording, character 2-5-grams their spelling and notation (`1/3`, `x2`); on MAP
this linear model is strong on its own and errs differently from a small transformer, so averaging the two helps
(bench/RESULTS.md). It is saved with skops (no pickle) and loaded only if the file holds the expected types.
"""

from pathlib import Path

import numpy as np
import skops.io as sio
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from .errors import InputError


TFIDF_FILE = "tfidf_lr.skops"


def fit_tfidf_classifier(texts: list[str], labels: list[str], seed: int = 42) -> Pipeline:
    """Fit word + char TF-IDF features and a multinomial logistic regression on texts and string labels."""
    features = FeatureUnion(
        [
            ("word", TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=3, sublinear_tf=True)),
        ]
    )
    pipeline = Pipeline([("features", features), ("clf", LogisticRegression(C=10, max_iter=300, random_state=seed))])
    return pipeline.fit(texts, labels)


def tfidf_probs(pipeline: Pipeline, texts: list[str], model_labels: list[str]) -> np.ndarray:
    """Probabilities over `model_labels` (classes the TF-IDF model never saw get 0)."""
    probs = pipeline.predict_proba(texts)
    out = np.zeros((len(texts), len(model_labels)), dtype=np.float32)
    column = {label: i for i, label in enumerate(pipeline.classes_)}
    for j, label in enumerate(model_labels):
        if label in column:
            out[:, j] = probs[:, column[label]]
    return out


def save_tfidf(pipeline: Pipeline, model_dir: str | Path) -> Path:
    """Save next to the model as `tfidf_lr.skops`."""
    path = Path(model_dir) / TFIDF_FILE
    sio.dump(pipeline, path)
    return path


_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.")


def load_tfidf(model_dir: str | Path) -> Pipeline:
    """Load `tfidf_lr.skops`, refusing any type outside scikit-learn, numpy, scipy and builtins."""
    path = Path(model_dir) / TFIDF_FILE
    if not path.is_file():
        raise InputError(f"{path}: missing; the model's metadata asks for a TF-IDF blend")
    untrusted = sio.get_untrusted_types(file=path)
    unexpected = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES)]
    if unexpected:
        raise InputError(f"{path}: refusing to load unexpected types {unexpected}")
    return sio.load(path, trusted=untrusted)
