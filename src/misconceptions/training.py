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
"""The shared parts of every training script: logging, checkpoint resolution, and `finalize_run`, the one ending of
every run (save, settings, evaluation as inference runs it, plots, card, push)."""

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import transformers
from transformers.trainer_utils import get_last_checkpoint

from .errors import InputError
from .hub import push_model_folder, update_model_card
from .plots import PLOTS_DIR, link_plots_in_card, plot_training_curves
from .settings import RunSettings


logger = logging.getLogger(__name__)


def setup_logging(training_args) -> None:
    """One log format for the script, datasets and transformers, at the process's log level."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
        force=True,  # main(argv) called again in one process logs to that call's stdout
    )
    level = training_args.get_process_log_level()
    # The project's own messages (resume point, saved files) show at INFO on the main process even when the
    # libraries stay "passive" (warnings only).
    own_level = min(level, logging.INFO) if training_args.should_log else level
    for name in ("misconceptions", "__main__"):
        logging.getLogger(name).setLevel(own_level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def resolve_checkpoint(training_args) -> str | None:
    """The checkpoint to resume from: the explicit one, else the last in output_dir (a rerun resumes).

    Refuses to train over a finished run (train_results.json present) unless overwrite_output_dir is set.
    """
    if training_args.resume_from_checkpoint:
        return training_args.resume_from_checkpoint
    output_dir = Path(training_args.output_dir)
    if not output_dir.is_dir():
        return None
    last = get_last_checkpoint(str(output_dir))
    if last is not None:
        logger.info("Resuming training from the last checkpoint: %s", last)
        return last
    if (output_dir / "train_results.json").exists() and not getattr(training_args, "overwrite_output_dir", False):
        raise InputError(
            f"{output_dir} already holds a finished run (train_results.json); choose another output_dir "
            "or pass --overwrite_output_dir true"
        )
    return None


def log_and_save_train_metrics(trainer, train_result, num_samples: int) -> None:
    """The standard train metrics, written as train_results.json with the trainer state."""
    metrics = dict(train_result.metrics)
    metrics["train_samples"] = num_samples
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()


def save_model_without_push(trainer, output_dir: str) -> None:
    """`trainer.save_model` without the push it starts when push_to_hub is set: card_and_push pushes once, with the
    toolkit's card, after the final evaluation."""
    push, trainer.args.push_to_hub = trainer.args.push_to_hub, False
    try:
        trainer.save_model(output_dir)
    finally:
        trainer.args.push_to_hub = push


def card_and_push(
    trainer,
    training_args,
    commit_message: str,
    *,
    task: str,
    base_model: str | None,
    dataset: str | None,
    metrics: dict,
    usage: str,
    tags: list[str],
    library_name: str | None = None,
) -> str | None:
    """On the main process: add the toolkit's section to the model card, then push output_dir if push_to_hub is set.

    The push goes through `hub.push_folder` (private unless hub_private_repo is false, hub_revision as the branch,
    checkpoints left out); a failure raises HubPushError after everything is saved locally.
    """
    if not trainer.is_world_process_zero():
        return None
    results = Path(training_args.output_dir) / "all_results.json"  # train and eval, merged by Trainer.save_metrics
    all_metrics = json.loads(results.read_text()) if results.is_file() else {}
    update_model_card(
        training_args.output_dir,
        task=task,
        base_model=base_model,
        dataset=dataset,
        metrics=all_metrics | metrics,
        usage=usage,
        tags=tags,
        library_name=library_name,
        hub_model_id=training_args.hub_model_id,
    )
    if training_args.push_to_hub and hasattr(trainer, "_finish_current_push"):
        trainer._finish_current_push()  # a checkpoint push (hub_strategy every_save) still running goes first
    return push_model_folder(training_args.output_dir, training_args, commit_message)


@dataclass
class RunCard:
    """What a run's model card and Hub commit say: `title`, `headline_label` and the value of the `headline` metric
    make the commit message ("MAP classifier, eval MAP@3 0.9221");
    `trainer_card` holds the keyword arguments of the trainer's own `create_model_card` (None: the trainer writes
    its card when saving, as the cross-encoder does)."""

    title: str
    task: str
    usage: str
    tags: list[str]
    headline: str
    headline_label: str
    library_name: str | None = None
    trainer_card: dict[str, Any] | None = field(default_factory=dict)


def finalize_run(
    trainer,
    train_result,
    training_args,
    *,
    settings: RunSettings,
    num_train_samples: int,
    card: RunCard,
    evaluate: Callable[[Path], dict[str, float]] | None = None,
) -> dict[str, float]:
    """The one ending of every training script.

    Train metrics and state are written and the model saved (without the push `save_model` would start). Then, on
    the main process: the typed settings beside the model, `evaluate(output_dir)` (the task's own files, such as
    the TF-IDF blend, and the held-out metrics computed exactly as the inference script computes them, with their
    predictions and plots), the training curves, and the card. Last the push, when asked. Returns the eval metrics.
    """
    log_and_save_train_metrics(trainer, train_result, num_train_samples)
    save_model_without_push(trainer, training_args.output_dir)
    output_dir = Path(training_args.output_dir)
    metrics: dict[str, float] = {}
    if trainer.is_world_process_zero():
        settings.save(output_dir)
        if evaluate is not None:
            metrics = evaluate(output_dir)
        if metrics:
            trainer.log_metrics("eval", metrics)
            trainer.save_metrics("eval", metrics)
        plot_training_curves(trainer.state.log_history, output_dir / PLOTS_DIR)
        logger.info("Plots written to %s", output_dir / PLOTS_DIR)
        if card.trainer_card is not None:
            trainer.create_model_card(model_name=output_dir.name, **card.trainer_card)
        link_plots_in_card(output_dir)
    card_and_push(
        trainer,
        training_args,
        f"{card.title}, {card.headline_label} {metrics.get(card.headline, 0):.4f}",
        task=card.task,
        base_model=settings.base_model,
        dataset=settings.dataset,
        metrics=metrics,
        usage=card.usage,
        tags=card.tags,
        library_name=card.library_name,
    )
    return metrics
