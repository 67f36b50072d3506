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
"""Plots of training and evaluation, written as PNGs: `<output_dir>/plots/` for a trained model (linked from its model
card by `link_plots_in_card`) and `<output stem>_plots/` beside a prediction script's `<output stem>_metrics.json`.

- `plot_training_curves`: training loss (and eval loss) and every other eval metric per step, from
  `trainer.state.log_history`;
- MAP classification: `plot_per_label_ap` (AP@3 per true label) and `plot_confusion_matrix` (top-1 prediction, the
  most frequent labels, the rest folded into "other"); `plot_map` writes both;
- Eedi: `plot_seen_unseen` (MAP@25 and recall@25, all/seen/unseen, before/after reranking when both are there) and
  `plot_ap_distribution` (per-row AP@25, seen and unseen apart); `plot_eedi` writes both.

Figures are plain `matplotlib.figure.Figure` objects drawn on the Agg canvas: no GUI, no change to pyplot's global
backend or figure list (nothing to close), safe in notebooks and servers. matplotlib and sklearn are imported inside
the functions, so `import misconceptions` stays light. Every PNG is written atomically.
"""

import os
import re
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .io_utils import atomic_path
from .metrics import average_precision_at_k, map_at_k


DPI = 120
TOP_LABELS = 15
OTHER = "other"
PLOTS_DIR = "plots"
CARD_BEGIN = "<!-- misconceptions:plots -->"
CARD_END = "<!-- /misconceptions:plots -->"
TITLES = {
    "training_loss": "Training loss and learning rate",
    "eval_metrics": "Evaluation metrics during training",
    "per_label_ap": "AP@3 per label",
    "confusion_matrix": "Confusion matrix (most frequent labels)",
    "seen_unseen": "MAP@25 and recall@25, seen vs unseen misconceptions",
    "ap_distribution": "Per-row AP@25, seen vs unseen misconceptions",
}
# Logged with every evaluation but not model quality: left out of the curves.
_NOT_METRICS = re.compile(r"(runtime|per_second|samples|rows|epoch|flos)$")
_GROUP = re.compile(r"^(seen_|unseen_)?(.*)$")


def prediction_plots_dir(output_csv: str | os.PathLike) -> Path:
    """`<output stem>_plots/` beside `<output stem>_metrics.json`."""
    output_csv = Path(output_csv)
    return output_csv.with_name(output_csv.stem + "_plots")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _integer_steps(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _steps(log_history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(entry["step"], float(entry[key])) for entry in log_history if key in entry and "step" in entry]
    return [s for s, _ in points], [v for _, v in points]


def plot_training_curves(log_history: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike) -> list[Path]:
    """`training_loss.png` (training loss, eval loss and learning rate per step) and `eval_metrics.png` (every other
    eval metric per step, seen/unseen variants in one panel); nothing for a history without them."""
    out_dir = Path(out_dir)
    written = []
    train_steps, train_loss = _steps(log_history, "loss")
    eval_steps, eval_loss = _steps(log_history, "eval_loss")
    lr_steps, lr = _steps(log_history, "learning_rate")
    if train_loss or eval_loss:
        fig = _figure(11 if lr else 6.5, 4)
        axes = fig.subplots(1, 2 if lr else 1, squeeze=False)[0]
        if train_loss:
            axes[0].plot(train_steps, train_loss, marker=".", label="training loss")
        if eval_loss:
            axes[0].plot(eval_steps, eval_loss, marker="o", label="eval loss")
        axes[0].set(title="Loss", xlabel="step", ylabel="loss")
        axes[0].legend()
        axes[0].grid(alpha=0.3)
        _integer_steps(axes[0])
        if lr:
            axes[1].plot(lr_steps, lr, color="tab:gray")
            axes[1].set(title="Learning rate", xlabel="step", ylabel="learning rate")
            axes[1].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
            axes[1].grid(alpha=0.3)
            _integer_steps(axes[1])
        fig.suptitle(TITLES["training_loss"])
        written.append(_save(fig, out_dir / "training_loss.png"))

    groups: dict[str, list[tuple[str, str]]] = {}  # metric -> [(line label, log key)]
    for key in dict.fromkeys(k for entry in log_history for k in entry):
        if not key.startswith("eval_") or key == "eval_loss" or _NOT_METRICS.search(key):
            continue
        subset, name = _GROUP.match(key.removeprefix("eval_")).groups()
        groups.setdefault(name, []).append((subset[:-1] if subset else "all", key))
    if groups:
        ncols = min(3, len(groups))
        nrows = -(-len(groups) // ncols)
        fig = _figure(4.5 * ncols, 3.5 * nrows)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, (name, lines) in zip(axes, groups.items(), strict=False):
            for label, key in lines:
                ax.plot(*_steps(log_history, key), marker="o", label=label)
            ax.set(title=name, xlabel="step", ylabel=name)
            ax.grid(alpha=0.3)
            _integer_steps(ax)
            if len(lines) > 1:
                ax.legend()
        for ax in axes[len(groups) :]:
            ax.set_visible(False)
        fig.suptitle(TITLES["eval_metrics"])
        written.append(_save(fig, out_dir / "eval_metrics.png"))
    return written


def per_label_ap(labels: Sequence[str], ranked: Sequence[Sequence[str]], k: int = 3) -> dict[str, tuple[float, int]]:
    """Mean AP@k and row count per true label."""
    scores: dict[str, list[float]] = {}
    for label, predicted in zip(labels, ranked, strict=True):
        scores.setdefault(label, []).append(average_precision_at_k(label, predicted, k))
    return {label: (float(np.mean(values)), len(values)) for label, values in scores.items()}


def plot_per_label_ap(
    labels: Sequence[str], ranked: Sequence[Sequence[str]], out_dir: str | os.PathLike, k: int = 3
) -> list[Path]:
    """`per_label_ap.png`: AP@k per true label as horizontal bars, best at the top, with each label's row count."""
    scores = sorted(per_label_ap(labels, ranked, k).items(), key=lambda item: (-item[1][0], item[0]))
    if not scores:
        return []
    names = [name for name, _ in scores]
    values = [value for _, (value, _) in scores]
    fig = _figure(9, 1.2 + 0.28 * len(names))
    ax = fig.subplots()
    bars = ax.barh(range(len(names)), values, color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.2f} (n={n})" for _, (v, n) in scores], padding=3, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.margins(y=0.01)
    ax.set_xlim(0, 1.18)
    ax.set(xlabel=f"AP@{k} (mean over the label's rows)", ylabel="true label")
    ax.set_title(f"AP@{k} per true label: MAP@{k} {map_at_k(labels, ranked, k):.4f} on {len(labels)} rows")
    ax.grid(axis="x", alpha=0.3)
    return [_save(fig, Path(out_dir) / "per_label_ap.png")]


def fold_labels(
    y_true: Sequence[Hashable], y_pred: Sequence[Hashable], top_n: int = TOP_LABELS
) -> tuple[list, list, list]:
    """Keep the `top_n` most frequent true labels (ties by name) and map every other label, true or predicted, to
    "other". Returns (y_true, y_pred, display labels: the kept ones by frequency, then "other" if used)."""
    counts = Counter(y_true)
    kept = [label for label, _ in sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))[:top_n]]
    keep = set(kept)
    true = [y if y in keep else OTHER for y in y_true]
    pred = [y if y in keep else OTHER for y in y_pred]
    return true, pred, kept + ([OTHER] if OTHER in true or OTHER in pred else [])


def plot_confusion_matrix(
    labels: Sequence[str], ranked: Sequence[Sequence[str]], out_dir: str | os.PathLike, top_n: int = TOP_LABELS
) -> list[Path]:
    """`confusion_matrix.png`: true label vs top-1 prediction over the `top_n` most frequent labels, others folded
    into "other" (sklearn's ConfusionMatrixDisplay, counts)."""
    from sklearn.metrics import ConfusionMatrixDisplay

    if not labels:
        return []
    y_true, y_pred, display = fold_labels(labels, [row[0] for row in ranked], top_n)
    size = 3 + 0.5 * len(display)
    fig = _figure(size + 1.5, size)
    ax = fig.subplots()
    ConfusionMatrixDisplay.from_predictions(
        y_true,
        y_pred,
        labels=display,
        ax=ax,
        xticks_rotation="vertical",
        values_format="d",
        colorbar=True,
        cmap="Blues",
        text_kw={"fontsize": 7},
    )
    ax.tick_params(labelsize=8)
    ax.set(xlabel="predicted label (top 1)", ylabel="true label")
    ax.set_title(
        f"Top-1 confusion matrix, {len(display) - (OTHER in display)} most frequent labels ({len(labels)} rows)"
    )
    return [_save(fig, Path(out_dir) / "confusion_matrix.png")]


def plot_map(
    labels: Sequence[str],
    ranked: Sequence[Sequence[str]],
    out_dir: str | os.PathLike,
    k: int = 3,
    top_n: int = TOP_LABELS,
) -> list[Path]:
    """The MAP classification plots: per-label AP@k and the confusion matrix."""
    return plot_per_label_ap(labels, ranked, out_dir, k) + plot_confusion_matrix(labels, ranked, out_dir, top_n)


def _stage_metrics(metrics: Mapping[str, float]) -> dict[str, dict[str, dict[str, float]]]:
    """{stage: {group: {metric: value}}} from retrieval_metrics / rerank_metrics keys (an `eval_` prefix allowed)."""
    plain = {k.removeprefix("eval_"): v for k, v in metrics.items()}
    stages = ["retriever", "reranked"] if any("reranked_" in k for k in plain) else [""]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for stage in stages:
        for group in ("", "seen_", "unseen_"):
            if not plain.get(f"{group}rows"):
                continue
            values = {m: plain.get(f"{group}{stage}_{m}" if stage else f"{group}{m}") for m in ("map@25", "recall@25")}
            if all(v is not None for v in values.values()):
                out.setdefault(stage, {})[group] = {**values, "rows": plain[f"{group}rows"]}
    return out


def plot_seen_unseen(metrics: Mapping[str, float], out_dir: str | os.PathLike) -> list[Path]:
    """`seen_unseen.png`: MAP@25 and recall@25 for all rows and for seen / unseen misconceptions, as grouped bars
    (retriever vs reranked when the metrics hold both)."""
    stages = _stage_metrics(metrics)
    if not stages:
        return []
    groups = list(next(iter(stages.values())))
    names = {"": "all", "seen_": "seen", "unseen_": "unseen"}
    stage_names = {"": "retriever", "retriever": "before reranking", "reranked": "after reranking"}
    x = np.arange(len(groups))
    width = 0.8 / len(stages)
    fig = _figure(10, 4.2)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, metric in zip(axes, ("map@25", "recall@25"), strict=True):
        for i, (stage, by_group) in enumerate(stages.items()):
            values = [by_group[g][metric] for g in groups]
            bars = ax.bar(x + (i - (len(stages) - 1) / 2) * width, values, width, label=stage_names[stage])
            ax.bar_label(bars, fmt="%.3f", padding=2, fontsize=8)
        rows = next(iter(stages.values()))
        ax.set_xticks(x, [f"{names[g]}\n({int(rows[g]['rows'])} rows)" for g in groups])
        ax.set(title=metric.upper().replace("RECALL", "Recall"), ylabel=metric, ylim=(0, 1.1))
        ax.grid(axis="y", alpha=0.3)
        if len(stages) > 1:
            ax.legend(loc="upper right")
    fig.suptitle(TITLES["seen_unseen"])
    return [_save(fig, Path(out_dir) / "seen_unseen.png")]


def row_ap(actual: Sequence[int], ranked: Sequence[Sequence[int]], k: int = 25) -> np.ndarray:
    """AP@k of every row."""
    return np.array([average_precision_at_k(a, list(p), k) for a, p in zip(actual, ranked, strict=True)])


def plot_ap_distribution(
    actual: Sequence[int],
    rankings: Mapping[str, Sequence[Sequence[int]]],
    out_dir: str | os.PathLike,
    seen: set[int] | None = None,
    k: int = 25,
) -> list[Path]:
    """`ap_distribution.png`: histogram of per-row AP@k (share of each group's rows), seen and unseen misconceptions
    side by side; one panel per ranking (e.g. {"retriever": ..., "reranked": ...})."""
    if not len(actual) or not rankings:
        return []
    actual = [int(a) for a in actual]
    if seen is None:
        masks = {"all rows": np.ones(len(actual), dtype=bool)}
    else:
        is_seen = np.array([a in seen for a in actual])
        masks = {name: mask for name, mask in (("seen", is_seen), ("unseen", ~is_seen)) if mask.any()}
    bins = np.linspace(0, 1, 21)
    fig = _figure(6.5 if len(rankings) == 1 else 5.5 * len(rankings), 4.2)
    axes = fig.subplots(1, len(rankings), sharey=True, squeeze=False)[0]
    for ax, (name, ranked) in zip(axes, rankings.items(), strict=True):
        ap = row_ap(actual, ranked, k)
        data = [ap[mask] for mask in masks.values()]
        ax.hist(
            data,
            bins=bins,
            weights=[np.full(len(d), 1 / len(d)) for d in data],
            label=[
                f"{g}: {m.sum()} rows, MAP@{k} {d.mean():.3f}" for (g, m), d in zip(masks.items(), data, strict=True)
            ],
        )
        ax.set(title=name, xlabel=f"AP@{k} of a row (1 = right misconception first, 0 = not in the top {k})")
        ax.set_ylabel("share of the group's rows")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(TITLES["ap_distribution"])
    return [_save(fig, Path(out_dir) / "ap_distribution.png")]


def plot_eedi(
    metrics: Mapping[str, float],
    actual: Sequence[int],
    rankings: Mapping[str, Sequence[Sequence[int]]],
    out_dir: str | os.PathLike,
    seen: set[int] | None = None,
) -> list[Path]:
    """The Eedi plots: seen/unseen MAP@25 and recall@25 bars, and the per-row AP@25 distribution."""
    return plot_seen_unseen(metrics, out_dir) + plot_ap_distribution(actual, rankings, out_dir, seen)


def link_plots_in_card(output_dir: str | os.PathLike) -> Path | None:
    """Append (or replace) a "## Plots" section in `<output_dir>/README.md` embedding every `plots/*.png` with a
    relative link. Idempotent; returns the card's path, or None when there is no card or no plot."""
    output_dir = Path(output_dir)
    card = output_dir / "README.md"
    pngs = sorted((output_dir / PLOTS_DIR).glob("*.png"))
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8")
    start = text.find(CARD_BEGIN)
    if start >= 0:  # drop the previous section, markers included
        end = text.find(CARD_END, start)
        text = text[:start].rstrip("\n") + ("\n" + text[end + len(CARD_END) :].lstrip("\n") if end >= 0 else "")
    text = text.rstrip("\n") + "\n"
    if pngs:
        lines = [CARD_BEGIN, "## Plots", ""]
        for png in pngs:
            title = TITLES.get(png.stem, png.stem.replace("_", " ").capitalize())
            lines += [f"### {title}", "", f"![{title}]({PLOTS_DIR}/{png.name})", ""]
        text += "\n" + "\n".join(lines) + CARD_END + "\n"
    with atomic_path(card) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return card if pngs else None
