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
"""A whole reference run as one resumable command (scripts/run_pipeline.py): the steps in order, each the existing
script (training under `accelerate launch` with its accelerate config), a finished step skipped, a killed one run
again (the training scripts resume from their last checkpoint), and a table of each step's metrics at the end.

Eedi (recipes/eedi/pipeline.yaml), as the reference solution's run.sh over its folds: the dataset built with the
folds, optional synthetic questions, retriever round 1 per fold, its candidates for every row, retriever round 2 on
those hard negatives, its candidates, the listwise reranker per fold, then one submission from the fold models
combined (mean cosine over the retrievers, mean rank over the rerankers: `predict_eedi.py`).
MAP (recipes/map/pipeline.yaml): build, train, predict the validation rows and the test file.
"""

import json
import logging
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from .errors import InputError


logger = logging.getLogger(__name__)

TASKS = ("eedi", "map")


@dataclass
class PipelineConfig:
    """A pipeline recipe (YAML). Paths are relative to the folder the command runs in, as in the other recipes."""

    task: str
    output_dir: str
    dataset_name: str
    train_csv: str | None = None  # when set, the first step builds `dataset_name` from it (if missing)
    test_csv: str | None = None
    misconceptions_csv: str | None = None  # Eedi: misconception_mapping.csv, for the build step
    folds: list[int] = field(default_factory=lambda: [0, 1])
    n_folds: int = 2
    accelerate_config: str = "accelerate_configs/ddp.yaml"
    num_processes: int | None = None  # unset: the accelerate config's
    # Eedi
    synthetic: str | None = None  # a scripts/generate_synthetic.py recipe; unset: no synthetic questions
    retriever: str | None = None
    retriever_round2: str | None = None
    reranker: str | None = None
    candidates_k: int = 100
    # MAP
    classifier: str | None = None
    # Extra command-line arguments per step kind (train_retriever, train_retriever2, train_reranker,
    # train_classifier, retrieve, predict, synthetic, build), appended to the step's command.
    step_args: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in TASKS:
            raise InputError(f"task must be one of {TASKS}, got {self.task!r}")
        needed = ("retriever", "retriever_round2", "reranker") if self.task == "eedi" else ("classifier",)
        missing = [name for name in needed if not getattr(self, name)]
        if missing:
            raise InputError(f"a {self.task} pipeline needs the recipe key(s) {missing}")
        if self.task == "eedi" and (not self.folds or any(not 0 <= k < self.n_folds for k in self.folds)):
            raise InputError(f"folds must be a non-empty list of fold numbers below n_folds={self.n_folds}")
        for name, args in self.step_args.items():
            if not isinstance(args, list) or not all(isinstance(a, str | int | float) for a in args):
                raise InputError(f"step_args.{name} must be a list of command-line arguments")
            self.step_args[name] = [str(a) for a in args]

    @classmethod
    def load(cls, path: str | os.PathLike, overrides: dict | None = None) -> "PipelineConfig":
        """The YAML recipe, with `overrides` (from the command line) on top; unknown keys fail naming them."""
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise InputError(f"{path}: pipeline recipe not found") from None
        except yaml.YAMLError as error:
            raise InputError(f"{path}: not valid YAML ({error})") from None
        if not isinstance(data, dict):
            raise InputError(f"{path}: expected a mapping of keys to values")
        data |= overrides or {}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{path}: unknown key(s) {unknown}; expected some of {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as error:
            raise InputError(f"{path}: {error}") from None


@dataclass
class Step:
    """One command of the pipeline, done when `done_file` exists; `metrics` names the JSON its summary reads."""

    name: str
    command: list[str]
    done_file: Path
    metrics: Path | None = None
    metric_keys: tuple[str, ...] = ()


def _launch(config: PipelineConfig, script: str) -> list[str]:
    """`accelerate launch --config_file <config> [--num_processes N] <script>`, with this environment's accelerate."""
    accelerate = Path(sys.executable).parent / "accelerate"
    launcher = (
        [str(accelerate), "launch"] if accelerate.exists() else [sys.executable, "-m", "accelerate.commands.launch"]
    )
    command = [*launcher, "--config_file", config.accelerate_config]
    if config.num_processes is not None:
        command += ["--num_processes", str(config.num_processes)]
    return [*command, script]


def eedi_steps(config: PipelineConfig) -> list[Step]:
    """The Eedi reference order over the configured folds."""
    out, data, python = Path(config.output_dir), config.dataset_name, sys.executable
    args = config.step_args
    steps: list[Step] = []
    if config.train_csv:
        if not config.misconceptions_csv:
            raise InputError("train_csv needs misconceptions_csv (misconception_mapping.csv) to build the dataset")
        build = [python, "data_builders/build_eedi.py", "--train_csv", config.train_csv, "--misconceptions_csv"]
        build += [config.misconceptions_csv, "--output_dir", data, "--n_folds", str(config.n_folds)]
        steps.append(Step("build", build + args.get("build", []), Path(data) / "dataset_dict.json"))
    extra: list[str] = []
    if config.synthetic:
        generations, synthetic = out / "synthetic-generations", out / "synthetic"
        command = [python, "scripts/generate_synthetic.py", "--config", config.synthetic, "--dataset_name", data]
        command += ["--output_dir", str(generations), *args.get("synthetic", [])]
        steps.append(Step("synthetic", command, generations / "summary.json"))
        command = [python, "data_builders/build_synthetic.py", "--generations", str(generations)]
        command += [
            "--misconceptions_csv",
            str(Path(data) / "misconception_mapping.csv"),
            "--output_dir",
            str(synthetic),
        ]
        steps.append(Step("synthetic-dataset", command, synthetic / "dataset_dict.json"))
        extra = ["--extra_datasets", str(synthetic)]
    training_metrics = ("eval_map@25", "eval_recall@25", "eval_unseen_map@25")
    for round_, recipe in ((1, config.retriever), (2, config.retriever_round2)):
        for k in config.folds:
            model = out / f"retriever{round_}-fold{k}"
            command = _launch(config, "scripts/train_retriever.py") + ["--config", recipe, "--fold", str(k)]
            command += ["--dataset_name", data, "--output_dir", str(model), *extra]
            if round_ == 2:
                command += ["--hard_negatives_dataset", str(out / f"candidates1-fold{k}")]
            command += args.get(f"train_retriever{'' if round_ == 1 else '2'}", [])
            steps.append(
                Step(
                    f"retriever{round_}-fold{k}",
                    command,
                    model / "train_results.json",
                    model / "eval_results.json",
                    training_metrics,
                )
            )
            candidates = out / f"candidates{round_}-fold{k}"
            command = [python, "scripts/retrieve.py", "--model", str(model), "--dataset", data]
            command += ["--output_csv", f"{candidates}.csv", "--candidates_out", str(candidates)]
            command += ["--candidates_k", str(config.candidates_k), *args.get("retrieve", [])]
            steps.append(Step(f"candidates{round_}-fold{k}", command, candidates / "dataset_info.json"))
    for k in config.folds:
        model = out / f"reranker-fold{k}"
        command = _launch(config, "scripts/train_reranker.py") + ["--config", config.reranker, "--fold", str(k)]
        command += ["--dataset_name", data, "--candidates", str(out / f"candidates2-fold{k}")]
        command += ["--output_dir", str(model), *args.get("train_reranker", [])]
        keys = ("eval_retriever_map@25", "eval_reranked_map@25", "eval_unseen_reranked_map@25")
        steps.append(
            Step(f"reranker-fold{k}", command, model / "train_results.json", model / "eval_results.json", keys)
        )
    if config.test_csv:
        submission = out / "submission.csv"
        command = [python, "scripts/predict_eedi.py", "--retriever"]
        command += [str(out / f"retriever2-fold{k}") for k in config.folds]
        command += ["--reranker", *[str(out / f"reranker-fold{k}") for k in config.folds]]
        command += [
            "--input_csv",
            config.test_csv,
            "--misconceptions_csv",
            str(Path(data) / "misconception_mapping.csv"),
        ]
        command += ["--output_csv", str(submission), "--candidates_k", str(config.candidates_k)]
        steps.append(Step("submission", command + args.get("predict", []), submission))
    return steps


def map_steps(config: PipelineConfig) -> list[Step]:
    """MAP: build the dataset (when `train_csv` is set), train the classifier, predict validation and test."""
    out, data, python = Path(config.output_dir), config.dataset_name, sys.executable
    args = config.step_args
    steps: list[Step] = []
    if config.train_csv:
        build = [python, "data_builders/build_map.py", "--train_csv", config.train_csv, "--output_dir", data]
        build += ["--test_csv", config.test_csv] if config.test_csv else []
        steps.append(Step("build", build + args.get("build", []), Path(data) / "dataset_dict.json"))
    model = out / "classifier"
    command = _launch(config, "scripts/train_classifier.py") + ["--config", config.classifier]
    command += ["--dataset_name", data, "--output_dir", str(model), *args.get("train_classifier", [])]
    steps.append(
        Step("classifier", command, model / "train_results.json", model / "eval_results.json", ("eval_map@3",))
    )
    validation = out / "validation_predictions.csv"
    command = [python, "scripts/predict_classifier.py", "--model", str(model), "--input_csv"]
    command += [str(Path(data) / "validation.csv"), "--output_csv", str(validation), *args.get("predict", [])]
    metrics = validation.with_name(validation.stem + "_metrics.json")
    steps.append(Step("predict-validation", command, validation, metrics, ("map@3",)))
    if config.test_csv:
        submission = out / "submission.csv"
        command = [python, "scripts/predict_classifier.py", "--model", str(model), "--input_csv", config.test_csv]
        command += ["--output_csv", str(submission), *args.get("predict", [])]
        steps.append(Step("submission", command, submission))
    return steps


def plan(config: PipelineConfig) -> list[Step]:
    return eedi_steps(config) if config.task == "eedi" else map_steps(config)


def select_steps(steps: list[Step], names: str | None) -> list[Step]:
    """`--steps a,b`: those steps only (in pipeline order); an unknown name fails listing the known ones."""
    if not names:
        return steps
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = [s.name for s in steps]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise InputError(f"unknown step(s) {unknown}; the steps are: {', '.join(known)}")
    return [s for s in steps if s.name in wanted]


def run_steps(steps: list[Step], dry_run: bool = False, env: dict | None = None) -> list[dict]:
    """Run each step not yet done, in order; stop at the first failure with its exit status."""
    results = []
    for i, step in enumerate(steps, 1):
        shown = shlex.join(step.command)
        if step.done_file.exists():
            print(f"[{i}/{len(steps)}] {step.name}: done ({step.done_file} exists), skipped", flush=True)  # noqa: T201
            results.append({"step": step.name, "status": "skipped", "seconds": 0.0})
            continue
        print(f"[{i}/{len(steps)}] {step.name}: {shown}", flush=True)  # noqa: T201
        if dry_run:
            results.append({"step": step.name, "status": "dry run", "seconds": 0.0})
            continue
        started = time.perf_counter()
        proc = subprocess.run(step.command, env={**os.environ, **(env or {})}, check=False)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(
                f"step {step.name} failed (exit {proc.returncode}) after {seconds:.0f} s; fix it and rerun the same "
                f"command: finished steps are skipped and a killed training resumes from its last checkpoint\n  {shown}"
            )
        if not step.done_file.exists():
            raise SystemExit(f"step {step.name} exited 0 but did not write {step.done_file}")
        results.append({"step": step.name, "status": "ran", "seconds": round(seconds, 1)})
    return results


def summary_table(steps: list[Step], results: list[dict]) -> str:
    """A Markdown table: each step, what happened, its time and its metrics (from the metrics JSON it wrote)."""
    lines = ["| step | status | seconds | metrics |", "|---|---|---|---|"]
    for step, result in zip(steps, results, strict=True):
        shown = ""
        if step.metrics is not None and step.metrics.exists():
            values = json.loads(step.metrics.read_text())
            shown = ", ".join(f"{k} {values[k]:.4f}" for k in step.metric_keys if k in values)
        lines.append(f"| {step.name} | {result['status']} | {result['seconds']} | {shown} |")
    return "\n".join(lines)
