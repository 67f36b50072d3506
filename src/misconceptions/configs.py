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
"""Argument dataclasses for the scripts; recipes set them through `trl.TrlParser` (YAML defaults, CLI overrides).

The values they are checked against (label targets, reranker types, the Eedi query prompt, extra-data mixtures) are
defined here too, so this module imports nothing from the package: any module can import it without a cycle. Fields
the three training configs share are declared once, in the mixins `HubOptions`, `OutputOptions` and `FoldOptions`.
"""

import json
import math
from dataclasses import dataclass, field
from typing import Any

import trl
from sentence_transformers import SentenceTransformerTrainingArguments
from sentence_transformers.base.sampler import BatchSamplers
from transformers import TrainingArguments


LABEL_TARGETS = ("label", "suffix")
RERANKER_TYPES = ("listwise", "pointwise")
RERANK_SCOPES = ("all", "seen")
# The Eedi reference solution's task description and prompt format ("Instruct: {task}\nQuery: {query}"), verbatim:
# the retriever's default query prompt.
EEDI_INSTRUCTION = (
    "Given a math problem statement and an incorrect answer as a query, retrieve relevant passages that identify "
    "and explain the nature of the error."
)
EEDI_QUERY_PROMPT = f"Instruct: {EEDI_INSTRUCTION}\nQuery: "
MIXTURE_EXAMPLE = '[{"path": "data/eedi-synthetic", "weight": 0.5}]'
CPU_BF16_CHOICES = ("auto", "true", "false")


def parse_mixture(value: Any, key: str) -> list[dict[str, Any]]:
    """A list of `{path, weight}` mappings (open-r1's dataset mixtures): from a recipe's YAML list, the command line's
    JSON string(s), or plain paths (weight 1.0). `path` is required, `weight` must be a number > 0; an error is one
    line naming the recipe key, the bad item and what was expected."""
    if value is None:
        return []
    items: list[Any] = []
    for item in value if isinstance(value, list | tuple) else [value]:
        if isinstance(item, str) and item.strip().startswith(("[", "{")):
            try:
                parsed = json.loads(item)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{key}: {item!r} is not valid JSON ({err.msg}); expected e.g. {MIXTURE_EXAMPLE}"
                ) from None
            items.extend(parsed if isinstance(parsed, list) else [parsed])
        else:
            items.append(item)
    mixture = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = {"path": item}
        if not isinstance(item, dict):
            # ValueError, not TypeError: the scripts turn a ValueError in __post_init__ into one line and exit 2
            raise ValueError(f"{key}[{i}]: expected a {{path, weight}} mapping or a path, got {item!r}")  # noqa: TRY004
        unknown = sorted(set(item) - {"path", "weight"})
        if unknown:
            raise ValueError(f"{key}[{i}]: unknown keys {unknown} in {item!r}; expected only 'path' and 'weight'")
        path, weight = item.get("path"), item.get("weight", 1.0)
        if not isinstance(path, str) or not path.strip():
            raise ValueError(f"{key}[{i}]: 'path' is required (a dataset folder or Hub id), got {item!r}")
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not (weight > 0 and math.isfinite(weight))
        ):
            raise ValueError(f"{key}[{i}] ({path}): 'weight' must be a number > 0, got {weight!r}")
        mixture.append({"path": path, "weight": float(weight)})
    return mixture


@dataclass
class HubOptions:
    """`hub_private_repo`, private by default here (TrainingArguments leaves it to the Hub). Listed before the
    TrainingArguments class in a config's bases, so this field replaces TrainingArguments' own."""

    hub_private_repo: bool | None = field(
        default=True,
        metadata={
            "help": "Create the Hub repo private (the default here; false for public). Kept if the repo exists."
        },
    )


@dataclass
class OutputOptions:
    """`overwrite_output_dir`: a finished run in output_dir is refused unless this is set (`resolve_checkpoint`)."""

    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow training into an output_dir that already holds a finished run."}
    )


@dataclass
class ProfileOptions:
    """`step_profile`: time each part of the training steps (`profiling.StepProfiler`) into step_profile.json."""

    step_profile: bool = field(
        default=False,
        metadata={
            "help": "Write step_profile.json: samples/s, tokens/s and where a step's time goes (data, forward, "
            "backward, optimizer, evaluation, saving), with the CPU's ISA flags."
        },
    )


@dataclass
class SpeedOptions:
    """`cpu_bf16`: bf16 autocast for CPU training where the CPU has it natively (`speed.py`; measured by
    bench/train_speed.py)."""

    cpu_bf16: str = field(
        default="false",
        metadata={
            "help": "CPU recipes (use_cpu: true) only: bf16 autocast in training. 'auto': on where the CPU computes "
            "bf16 natively (AVX512-BF16 or AMX), off where torch would emulate it (slower than fp32); 'true'; "
            "'false' (default: fp32). bf16: true or fp16: true in a recipe win; GPU recipes keep their own precision."
        },
    )

    def __post_init__(self):
        from .speed import use_cpu_bf16  # here, not at module level: configs is a leaf of the package

        wanted = use_cpu_bf16(self.cpu_bf16)  # a bad choice fails here, on any machine
        if self.use_cpu and not (self.bf16 or self.fp16):
            # bf16 unset or false: the CPU decides (TRL's SFTConfig would otherwise turn an unset bf16 on everywhere)
            self.bf16 = wanted
        super().__post_init__()


@dataclass
class BucketOptions:
    """`length_bucket_size`: the sentence-transformers trainers' padding cut (`speed.bucket_by_length`). The MAP
    classifier has no need of it: its `group_by_length` sampler already batches rows of like length."""

    length_bucket_size: int = field(
        default=0,
        metadata={
            "help": "Run each padded training batch as length-sorted chunks of this many rows, each cut to its own "
            "longest row (fewer padded tokens, the same outputs and gradients); 0 turns it off. The retriever and "
            "the pointwise cross-encoder."
        },
    )

    def check_length_bucket_size(self) -> None:
        if self.length_bucket_size < 0:
            raise ValueError(f"length_bucket_size must be >= 0, got {self.length_bucket_size}")


@dataclass
class FoldOptions:
    """The held-out `fold` and its rule (`check_fold`), for the configs that train on a dataset's folds."""

    fold: int = field(
        default=0, metadata={"help": "Held-out fold (the dataset's `fold` column); -1 trains on every fold, no eval."}
    )

    def check_fold(self) -> None:
        """-1 or a fold id >= 0. Called from a config's __post_init__ before TrainingArguments' own, which checks
        the evaluation settings: -1 holds nothing out, so evaluation and best-checkpoint selection are turned off."""
        if self.fold < -1:
            raise ValueError(f"fold must be -1 (train on every fold) or a fold id >= 0, got {self.fold}")
        if self.fold == -1 and (self.eval_strategy != "no" or self.load_best_model_at_end):
            # Training on every fold leaves nothing to evaluate or to pick a best checkpoint with.
            self.eval_strategy, self.load_best_model_at_end = "no", False


@dataclass
class ScriptArguments(trl.ScriptArguments):
    """Which dataset to train on: a local `save_to_disk` folder or a Hub dataset id."""

    dataset_test_split: str = field(default="validation", metadata={"help": "Split used for evaluation."})

    def __post_init__(self):
        if not self.dataset_name:
            raise ValueError("dataset_name is required: a folder written by data_builders/ or a Hub dataset id")


@dataclass
class ClassifierConfig(HubOptions, OutputOptions, ProfileOptions, SpeedOptions, TrainingArguments):
    """TrainingArguments plus the MAP classifier's own settings."""

    max_length: int = field(default=256, metadata={"help": "Tokens kept per input (longer inputs are truncated)."})
    text_template: str | None = field(
        default=None,
        metadata={
            "help": "str.format template over the CSV columns (QuestionText, MC_Answer, StudentExplanation, ...) "
            "that builds the model input; unset = the MAP reference solution's prompt."
        },
    )
    label_target: str = field(
        default="label",
        metadata={
            "help": "'label': the full Category:Misconception labels (the MAP reference solution); 'suffix': the 37 suffixes, "
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
    teacher_model: str | None = field(
        default=None,
        metadata={"help": "Distillation: a trained classifier (folder or Hub id, same labels) to learn from as well."},
    )
    distill_weight: float = field(default=0.5, metadata={"help": "With teacher_model: (1 - w) * CE + w * T^2 * KL."})
    distill_temperature: float = field(default=2.0, metadata={"help": "With teacher_model: the temperature T."})

    def __post_init__(self):
        w, t = self.distill_weight, self.distill_temperature
        if not 0.0 <= w <= 1.0 or t <= 0:
            raise ValueError(f"need distill_weight in [0, 1], distill_temperature > 0: {w}, {t}")
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


POOLING_CHOICES = ("last_token", "mean", "cls")


@dataclass
class RetrieverConfig(
    HubOptions,
    OutputOptions,
    ProfileOptions,
    SpeedOptions,
    BucketOptions,
    FoldOptions,
    SentenceTransformerTrainingArguments,
):
    """SentenceTransformerTrainingArguments plus the Eedi bi-encoder retriever's own settings."""

    query_prompt: str = field(
        default=EEDI_QUERY_PROMPT,
        metadata={
            "help": "Prompt put before every query (the Eedi reference solution's instruction); '' for none. Saved with the model."
        },
    )
    query_template: str | None = field(
        default=None,
        metadata={
            "help": "str.format template over the pivoted columns (QuestionText, CorrectAnswerText, AnswerText, "
            "ConstructName, SubjectName, ...) that builds the query; unset = the Eedi reference solution's structure (`query`)."
        },
    )
    pooling: str = field(
        default="mean", metadata={"help": "'last_token' (decoders; any padding side), 'mean' or 'cls'."}
    )
    query_max_length: int = field(default=144, metadata={"help": "Tokens kept per query, prompt included."})
    document_max_length: int = field(default=256, metadata={"help": "Tokens kept per misconception description."})
    padding_side: str | None = field(
        default=None, metadata={"help": "Tokenizer padding side, 'left' or 'right' (unset: the tokenizer's own)."}
    )
    scale: float = field(
        default=20.0, metadata={"help": "MultipleNegativesRankingLoss scale (1 / temperature) on cosine scores."}
    )
    num_negatives: int = field(
        default=0, metadata={"help": "Hard negatives per query, on top of the in-batch negatives (seed: 96)."}
    )
    hard_negatives_range_min: int = field(
        default=0, metadata={"help": "Skip this many top-ranked wrong misconceptions before taking negatives."}
    )
    hard_negatives_range_max: int | None = field(
        default=None, metadata={"help": "Take negatives among the top this-many (unset: just enough)."}
    )
    hard_negatives_sampling: str = field(
        default="top", metadata={"help": "'top': the highest-ranked negatives; 'random': sampled within the range."}
    )
    hard_negatives_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Candidates saved by scripts/retrieve.py --candidates_out (a second round); unset: mine "
            "negatives with the model being trained, before training."
        },
    )
    lora_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the LoRA weights (others use learning_rate); needs use_peft."},
    )
    extra_datasets: list[dict[str, Any]] | str | None = field(
        default=None,
        metadata={
            "help": "More training pairs, e.g. synthetic ones (data_builders/build_synthetic.py): Eedi datasets by "
            "path or Hub id, training only, never evaluated on. A list of {path, weight}: weight 1 (the default) uses "
            "every row once, 2 twice, 0.5 a random half. On the command line JSON, e.g. "
            f"'{MIXTURE_EXAMPLE}', or plain paths.",
            "nargs": "+",  # HfArgumentParser passes metadata to argparse: JSON strings or paths, one or more
        },
    )
    batch_sampler: BatchSamplers | str = field(
        default=BatchSamplers.NO_DUPLICATES,
        metadata={
            "help": "no_duplicates (default): no text twice in a batch, so no misconception is its own negative; "
            "no_false_negatives: only that rule (shared negatives allowed), for many negatives per row."
        },
    )

    def __post_init__(self):
        if self.pooling not in POOLING_CHOICES:
            raise ValueError(f"pooling must be one of {POOLING_CHOICES}, got '{self.pooling}'")
        if min(self.query_max_length, self.document_max_length) < 8:
            raise ValueError("query_max_length and document_max_length must be at least 8")
        if self.padding_side not in (None, "left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got '{self.padding_side}'")
        if self.num_negatives < 0 or self.hard_negatives_range_min < 0:
            raise ValueError("num_negatives and hard_negatives_range_min must be >= 0")
        if self.hard_negatives_sampling not in ("top", "random"):
            raise ValueError(
                f"hard_negatives_sampling must be 'top' or 'random', got '{self.hard_negatives_sampling}'"
            )
        if self.scale <= 0:
            raise ValueError(f"scale must be positive, got {self.scale}")
        self.check_fold()
        self.check_length_bucket_size()
        # The query prompt is applied to the anchor column only; queries and documents get their own max lengths.
        if not self.prompts and self.query_prompt:
            self.prompts = {"anchor": self.query_prompt}
        if not self.router_mapping:
            self.router_mapping = {"anchor": "query", "positive": "document"} | {
                f"negative_{i}": "document" for i in range(1, self.num_negatives + 1)
            }
        if self.batch_sampler == "no_false_negatives":
            # here, not at module level: configs is a leaf of the package (every module may import it)
            from .retrieval_training import NoFalseNegativesBatchSampler

            self.batch_sampler = NoFalseNegativesBatchSampler
        self.extra_datasets = parse_mixture(self.extra_datasets, "extra_datasets")
        if self.lora_learning_rate is not None and not self.learning_rate_mapping:
            self.learning_rate_mapping = {r"\.lora_(A|B|embedding_A|embedding_B)\.": self.lora_learning_rate}
        super().__post_init__()


@dataclass
class RerankerConfig(
    HubOptions, OutputOptions, ProfileOptions, SpeedOptions, BucketOptions, FoldOptions, trl.SFTConfig
):
    """SFTConfig (the listwise reranker's trainer) plus the reranker's own settings; the pointwise cross-encoder
    gets the same training settings as CrossEncoderTrainingArguments."""

    reranker_type: str = field(
        default="listwise",
        metadata={
            "help": "'listwise': a causal LM names the right candidate (TRL SFT); 'pointwise': a cross-encoder."
        },
    )
    candidates: str | None = field(
        default=None,
        metadata={"help": "Candidates from scripts/retrieve.py --candidates_out (every row of the dataset)."},
    )
    extra_candidates: list[dict[str, Any]] | str | None = field(
        default=None,
        metadata={
            "help": "More training rows: candidates from retrieve.py --candidates_out over other labelled questions "
            "(e.g. build_synthetic.py's synthetic.csv); training only. A list of {path, weight}: weight 1 (the "
            "default) every row once, 2 twice, 0.5 a random half. On the command line JSON, e.g. "
            f"'{MIXTURE_EXAMPLE}', or plain paths.",
            "nargs": "+",
        },
    )
    num_candidates: int = field(
        default=20, metadata={"help": "Listwise: candidates per training prompt (the gold one inserted if missed)."}
    )
    num_negatives: int = field(
        default=7, metadata={"help": "Pointwise: hard negatives per query, the top wrong candidates."}
    )
    in_batch_negatives: int = field(
        default=1, metadata={"help": "Pointwise: extra random negatives per query from the batch (at least 1)."}
    )
    rerank_top_k: int = field(default=25, metadata={"help": "Candidates reranked at inference; the rest follow."})
    window: int = field(default=20, metadata={"help": "Listwise: candidates per prompt at inference."})
    stride: int = field(default=10, metadata={"help": "Listwise: step between sliding windows (<= window)."})
    blend_weight: float = field(
        default=0.0,
        metadata={"help": "Final score: (1 - w) * reranker log-prob + w * retriever log-prob (0: reranker only)."},
    )
    rerank_scope: str = field(
        default="all",
        metadata={
            "help": "Which candidates the reranker moves: 'all', or 'seen' (only the misconceptions it was trained "
            "on; every other candidate keeps the retriever's position).",
            "choices": list(RERANK_SCOPES),
        },
    )
    final_eval: bool = field(
        default=True, metadata={"help": "Rerank the held-out fold after training (MAP@25 before and after)."}
    )
    final_eval_max_rows: int | None = field(
        default=None, metadata={"help": "Rerank at most this many held-out rows after training (unset: all)."}
    )

    def __post_init__(self):
        if self.reranker_type not in RERANKER_TYPES:
            raise ValueError(f"reranker_type must be one of {RERANKER_TYPES}, got '{self.reranker_type}'")
        if not 0.0 <= self.blend_weight <= 1.0:
            raise ValueError(f"blend_weight must be between 0 and 1, got {self.blend_weight}")
        if self.rerank_scope not in RERANK_SCOPES:
            raise ValueError(f"rerank_scope must be one of {RERANK_SCOPES}, got '{self.rerank_scope}'")
        if self.num_candidates < 2 or self.num_candidates > 26:
            raise ValueError(f"num_candidates must be between 2 and 26 (lettered A-Z), got {self.num_candidates}")
        if self.window < 2 or self.window > 26 or not 1 <= self.stride <= self.window:
            raise ValueError(f"need 2 <= window <= 26 and 1 <= stride <= window, got {self.window}/{self.stride}")
        if min(self.num_negatives, self.in_batch_negatives, self.rerank_top_k) < 1:
            raise ValueError("num_negatives, in_batch_negatives and rerank_top_k must be at least 1")
        self.check_fold()
        self.check_length_bucket_size()
        self.extra_candidates = parse_mixture(self.extra_candidates, "extra_candidates")
        if self.reranker_type == "listwise":
            self.completion_only_loss = True if self.completion_only_loss is None else self.completion_only_loss
        super().__post_init__()
