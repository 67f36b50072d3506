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
"""Plots: each function on small real-looking inputs, the card's Plots section, and train_retriever.py end to end with
TensorBoard. (train_classifier.py's plots, card links and TensorBoard events, and predict_classifier.py's
`<stem>_plots/`, are checked on the run tests/test_scripts.py trains anyway.)"""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from misconceptions import retrieval_metrics
from misconceptions.plots import (
    OTHER,
    fold_labels,
    link_plots_in_card,
    per_label_ap,
    plot_ap_distribution,
    plot_confusion_matrix,
    plot_eedi,
    plot_map,
    plot_per_label_ap,
    plot_seen_unseen,
    plot_training_curves,
)
from misconceptions.rerank import rerank_metrics

from .conftest import DATA


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# A Trainer log_history as train_classifier.py writes it (logging and eval every 2 steps, then the train summary).
LOG_HISTORY = [
    {"epoch": 0.08, "grad_norm": 1.86, "learning_rate": 0.0, "loss": 1.958, "step": 1},
    {"epoch": 0.17, "grad_norm": 1.56, "learning_rate": 2e-4, "loss": 1.946, "step": 2},
    {
        "epoch": 0.17,
        "eval_loss": 1.87,
        "eval_map@3": 0.60,
        "eval_runtime": 1.57,
        "eval_samples_per_second": 19.1,
        "step": 2,
    },
    {"epoch": 0.25, "grad_norm": 1.51, "learning_rate": 1.5e-4, "loss": 1.878, "step": 3},
    {"epoch": 0.33, "grad_norm": 2.13, "learning_rate": 5e-5, "loss": 1.813, "step": 4},
    {
        "epoch": 0.33,
        "eval_loss": 1.78,
        "eval_map@3": 0.61,
        "eval_runtime": 1.11,
        "eval_samples_per_second": 27.1,
        "step": 4,
    },
    {"epoch": 0.33, "step": 4, "total_flos": 8.3e10, "train_loss": 1.90, "train_runtime": 24.3},
]


def assert_pngs(paths, names):
    assert sorted(p.name for p in paths) == sorted(names)
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, (path, len(data))


@pytest.fixture(scope="module")
def map_rows():
    """600 real MAP labels with ranked predictions: right first for 60%, second for 20%, missed for the rest."""
    train = DATA / "map" / "train.csv"
    if not train.is_file():
        pytest.skip(f"{train} not found (set MISCONCEPTIONS_DATA)")
    df = pd.read_csv(train, dtype=str, keep_default_na=False).sample(600, random_state=0)
    labels = (df["Category"] + ":" + df["Misconception"]).tolist()
    vocabulary = sorted(set(labels))
    rng = np.random.default_rng(0)
    ranked = []
    for label in labels:
        others = [x for x in rng.choice(vocabulary, 4, replace=False) if x != label][:3]
        draw = rng.random()
        ranked.append([label, *others[:2]] if draw < 0.6 else [others[0], label, others[1]] if draw < 0.8 else others)
    return labels, ranked


@pytest.fixture(scope="module")
def eedi_rows():
    """300 wrong answers over misconception ids 0-199 (seen: below 100), a retriever order and a better reranked one."""
    rng = np.random.default_rng(0)
    actual = rng.integers(0, 200, 300).tolist()
    retriever = []
    for gold in actual:
        ids = [int(i) for i in rng.permutation(200) if i != gold][:30]
        if rng.random() < 0.7:
            ids.insert(int(rng.integers(0, 25)), gold)
        retriever.append(ids[:30])
    reranked = [
        sorted(ids[:25], key=lambda i, g=gold: i != g) + ids[25:] for gold, ids in zip(actual, retriever, strict=True)
    ]
    return actual, retriever, reranked, set(range(100))


def test_import_stays_light():
    code = "import sys, misconceptions.plots; assert 'matplotlib' not in sys.modules and 'sklearn' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_training_curves(tmp_path):
    paths = plot_training_curves(LOG_HISTORY, tmp_path)
    assert_pngs(paths, ["training_loss.png", "eval_metrics.png"])
    # Without evaluations there is only the loss; without any log, nothing.
    only_train = [e for e in LOG_HISTORY if not any(k.startswith("eval_") for k in e)]
    assert [p.name for p in plot_training_curves(only_train, tmp_path / "a")] == ["training_loss.png"]
    assert plot_training_curves([], tmp_path / "b") == [] and not (tmp_path / "b").exists()


def test_per_label_ap_hand_computed(map_rows, tmp_path):
    scores = per_label_ap(["a", "a", "b", "c"], [["a", "x", "y"], ["x", "a", "y"], ["x", "y", "z"], ["x", "y", "c"]])
    assert scores == {"a": (0.75, 2), "b": (0.0, 1), "c": (pytest.approx(1 / 3), 1)}
    assert_pngs(plot_per_label_ap(*map_rows, tmp_path), ["per_label_ap.png"])


def test_confusion_matrix_folds_labels_beyond_the_top_n(map_rows, tmp_path, monkeypatch):
    from sklearn.metrics import ConfusionMatrixDisplay

    labels, ranked = map_rows
    calls = []
    original = ConfusionMatrixDisplay.from_predictions

    def spy(y_true, y_pred, **kwargs):
        calls.append((list(y_true), list(y_pred), kwargs["labels"]))
        return original(y_true, y_pred, **kwargs)

    monkeypatch.setattr(ConfusionMatrixDisplay, "from_predictions", spy)
    assert_pngs(plot_confusion_matrix(labels, ranked, tmp_path, top_n=5), ["confusion_matrix.png"])
    y_true, y_pred, display = calls[0]
    top5 = [label for label, _ in pd.Series(labels).value_counts().head(5).items()]
    assert display == [*top5, OTHER]  # the 5 most frequent labels by count, then "other"
    assert y_true == [label if label in top5 else OTHER for label in labels]
    assert y_pred == [row[0] if row[0] in top5 else OTHER for row in ranked]
    assert y_true.count(OTHER) == sum(label not in top5 for label in labels) > 0
    # Few labels: nothing to fold, no "other" column.
    assert fold_labels(["a", "b", "a"], ["a", "a", "b"], top_n=15) == (["a", "b", "a"], ["a", "a", "b"], ["a", "b"])


def test_eedi_plots_retrieval_and_reranking(eedi_rows, tmp_path):
    from misconceptions.plots import _stage_metrics

    actual, retriever, reranked, seen = eedi_rows
    metrics = retrieval_metrics(actual, retriever, seen)
    assert_pngs(
        plot_eedi(metrics, actual, {"retriever": retriever}, tmp_path / "r", seen),
        ["seen_unseen.png", "ap_distribution.png"],
    )
    frame = pd.DataFrame({"MisconceptionId": actual, "candidate_ids": retriever})
    before_after = {f"eval_{k}": v for k, v in rerank_metrics(frame, np.array(reranked), seen).items()}
    bars = _stage_metrics(before_after)  # what the bars show: before and after, all/seen/unseen
    assert list(bars) == ["retriever", "reranked"] and list(bars["reranked"]) == ["", "seen_", "unseen_"]
    assert bars["reranked"]["unseen_"]["map@25"] == before_after["eval_unseen_reranked_map@25"]
    assert bars["retriever"][""]["map@25"] == pytest.approx(metrics["map@25"])
    assert_pngs(plot_seen_unseen(before_after, tmp_path / "rr"), ["seen_unseen.png"])
    paths = plot_ap_distribution(actual, {"retriever": retriever, "reranked": reranked}, tmp_path / "rr", seen)
    assert_pngs(paths, ["ap_distribution.png"])
    assert plot_seen_unseen({}, tmp_path / "none") == [] and plot_ap_distribution([], {}, tmp_path / "none") == []


def test_plot_map_writes_both_and_leaves_no_pyplot_figure(map_rows, tmp_path):
    import matplotlib.pyplot as plt

    assert_pngs(plot_map(*map_rows, tmp_path), ["per_label_ap.png", "confusion_matrix.png"])
    plot_training_curves(LOG_HISTORY, tmp_path)
    assert plt.get_fignums() == []


def test_card_section_is_added_once_and_kept_current(tmp_path):
    card = tmp_path / "README.md"
    card.write_text("---\nlicense: apache-2.0\n---\n\n# my-model\n\nSome text.\n")
    assert link_plots_in_card(tmp_path) is None and card.read_text().count("## Plots") == 0  # no plots yet
    plot_training_curves(LOG_HISTORY, tmp_path / "plots")
    link_plots_in_card(tmp_path)
    link_plots_in_card(tmp_path)
    text = card.read_text()
    assert text.startswith("---\nlicense: apache-2.0\n---\n\n# my-model\n\nSome text.\n")
    assert text.count("## Plots") == 1
    assert text.count("](plots/training_loss.png)") == 1 and text.count("](plots/eval_metrics.png)") == 1
    (tmp_path / "plots" / "eval_metrics.png").unlink()
    link_plots_in_card(tmp_path)
    text = card.read_text()
    assert text.count("## Plots") == 1 and "eval_metrics.png" not in text and "](plots/training_loss.png)" in text
    assert link_plots_in_card(tmp_path / "no-card") is None


def test_train_retriever_plots_card_and_tensorboard(eedi_minilm_run):
    """The real train_retriever.py (tests/conftest.py: 4 steps, an evaluation every 2): plots, card links, events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, log = eedi_minilm_run
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert plots == ["ap_distribution.png", "eval_metrics.png", "seen_unseen.png", "training_loss.png"]
    assert f"Plots written to {out / 'plots'}" in log
    card = (out / "README.md").read_text()
    assert card.count("## Plots") == 1 and all(card.count(f"](plots/{name})") == 1 for name in plots)
    events = list((out / "runs").glob("*/events.out.tfevents.*"))
    assert len(events) == 1
    scalars = EventAccumulator(str(events[0].parent)).Reload().Tags()["scalars"]
    assert {"train/loss", "eval/map@25", "eval/unseen_map@25"} <= set(scalars), scalars
    eval_results = json.loads((out / "eval_results.json").read_text())
    assert eval_results["eval_unseen_rows"] > 0
