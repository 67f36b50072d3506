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
"""Argument dataclasses for the scripts; recipes set them through `trl.TrlParser` (YAML defaults, CLI overrides)."""

from dataclasses import dataclass, field

import trl
from transformers import TrainingArguments

from .classifier import LABEL_TARGETS


@dataclass
class ScriptArguments(trl.ScriptArguments):
    """Which dataset to train on: a local `save_to_disk` folder or a Hub dataset id."""

    dataset_test_split: str = field(default="validation", metadata={"help": "Split used for evaluation."})

    def __post_init__(self):
        if not self.dataset_name:
            raise ValueError("dataset_name is required: a folder written by data_builders/ or a Hub dataset id")


@dataclass
class ClassifierConfig(TrainingArguments):
    """TrainingArguments plus the MAP classifier's own settings."""

    max_length: int = field(default=256, metadata={"help": "Tokens kept per input (longer inputs are truncated)."})
    text_template: str | None = field(
        default=None,
        metadata={
            "help": "str.format template over the CSV columns (QuestionText, MC_Answer, StudentExplanation, ...) "
            "that builds the model input; unset = the seed's prompt."
        },
    )
    label_target: str = field(
        default="label",
        metadata={
            "help": "'label': the full Category:Misconception labels (the seed); 'suffix': the 37 suffixes, "
            "with True_/False_ derived from the chosen answer."
        },
    )
    class_weighting: str = field(
        default="balanced", metadata={"help": "'balanced': sklearn balanced class weights in the loss; 'none'."}
    )
    restrict_labels: bool = field(
        default=True,
        metadata={"help": "At prediction, rank labels seen for the question first (saved with the model)."},
    )
    derive_prefix: bool = field(
        default=True, metadata={"help": "At prediction, take True_/False_ from whether the answer is correct."}
    )
    tfidf_weight: float = field(
        default=0.0,
        metadata={
            "help": "Also fit a TF-IDF (word + char n-grams) + logistic-regression model on the same texts and blend "
            "its probabilities at prediction: (1 - w) * model + w * tfidf. 0 turns it off."
        },
    )
    pad_to_max_length: bool = field(
        default=False,
        metadata={"help": "Pad every input to max_length (static shapes, the naive setting) instead of per batch."},
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow training into an output_dir that already holds a finished run."}
    )

    def __post_init__(self):
        if self.label_target not in LABEL_TARGETS:
            raise ValueError(f"label_target must be one of {LABEL_TARGETS}, got '{self.label_target}'")
        if self.class_weighting not in ("balanced", "none"):
            raise ValueError(f"class_weighting must be 'balanced' or 'none', got '{self.class_weighting}'")
        if self.label_target == "suffix" and not self.derive_prefix:
            raise ValueError("label_target: suffix needs derive_prefix: true (the prefix is not predicted)")
        if not 0.0 <= self.tfidf_weight <= 1.0:
            raise ValueError(f"tfidf_weight must be between 0 and 1, got {self.tfidf_weight}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8, got {self.max_length}")
        super().__post_init__()


def parse_config(parser) -> tuple:
    """`parser.parse_args_and_config()` with recipe errors (missing file, unknown or bad key) as one clear line."""
    import sys

    import yaml

    try:
        return parser.parse_args_and_config()
    except (ValueError, FileNotFoundError, yaml.YAMLError) as err:
        print(f"error: {err}", file=sys.stderr)  # noqa: T201
        sys.exit(2)
