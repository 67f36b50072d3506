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
"""The settings a training run saves beside its model, typed: one dataclass per task, written as JSON.

Inference, the reranker and the app read these instead of asking the user again: how queries are built (template,
instruction, explanations), how the model was loaded (dtype, 4-bit/GPTQ/AWQ quantization), the retriever's loss
scale (the temperature its scores are blended at), and which misconceptions training saw. The file names are the
ones earlier versions wrote, and a file without a newer field reads with that field's default.
"""

import dataclasses
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from typing_extensions import Self

from .errors import InputError
from .io_utils import write_json


logger = logging.getLogger(__name__)

S = TypeVar("S", bound="RunSettings")


@dataclass
class RunSettings:
    """The fields every task saves. `quantization` is the model's `quantization_config` as a dict: bitsandbytes
    (`load_in_4bit`, ...), or a GPTQ/AWQ checkpoint's (`quant_method` says which)."""

    FILE: ClassVar[str] = ""
    TASK: ClassVar[str] = ""
    WRITTEN_BY: ClassVar[str] = ""

    base_model: str | None = None
    dataset: str | None = None
    dtype: str | None = None
    quantization: dict[str, Any] | None = None
    task: str = ""

    def __post_init__(self) -> None:
        self.task = self.task or self.TASK

    @property
    def quant_method(self) -> str | None:
        """`bitsandbytes`, `gptq`, `awq`, ... or None for a model in full precision."""
        if not self.quantization:
            return None
        method = self.quantization.get("quant_method")
        return str(getattr(method, "value", method) or "bitsandbytes")

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the settings as JSON in `folder` (atomically); return the file's path."""
        path = Path(folder) / self.FILE
        write_json(path, asdict(self))
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike, required: bool = True) -> Self:
        """The settings saved in `folder`. Missing file: InputError naming the folder and the script that writes
        the file, or the defaults when not `required` (a plain sentence-transformers folder)."""
        path = Path(folder) / cls.FILE
        if not path.is_file():
            if required:
                raise InputError(f"{folder}: no {cls.FILE}; expected a folder written by {cls.WRITTEN_BY}")
            return cls()
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "settings") -> Self:
        """Typed settings from a saved dict; keys this version does not know are ignored with a warning."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            logger.warning("%s: ignoring unknown settings %s", source, unknown)
        settings = cls(**{k: v for k, v in data.items() if k in names})
        if settings.task != cls.TASK:
            raise InputError(f"{source}: task is {settings.task!r}, expected {cls.TASK!r}")
        return settings


@dataclass
class ClassifierSettings(RunSettings):
    """A MAP classifier: its label space, the question table that restricts labels, and the input template."""

    FILE: ClassVar[str] = "misconceptions_classifier.json"
    TASK: ClassVar[str] = "map-classification"
    WRITTEN_BY: ClassVar[str] = "scripts/train_classifier.py"

    label_target: str = "label"
    model_labels: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    questions: dict[str, Any] = field(default_factory=dict)
    question_texts: dict[str, str] = field(default_factory=dict)
    text_template: str | None = None
    max_length: int = 256
    restrict_labels: bool = True
    derive_prefix: bool = True
    tfidf_weight: float = 0.0


@dataclass
class RetrieverSettings(RunSettings):
    """An Eedi bi-encoder: how queries are written, its pooling, loss scale and the misconceptions training saw.

    `explanations`: the training queries ended with an `<LLMOutput>` explanation (build_eedi.py --explanations), so
    retrieval needs one per row too. `loss_scale` is MultipleNegativesRankingLoss's scale: the reranker blends this
    retriever's cosine scores at it. `seen_misconception_ids` is None when unknown.
    """

    FILE: ClassVar[str] = "misconceptions_retriever.json"
    TASK: ClassVar[str] = "eedi-retrieval"
    WRITTEN_BY: ClassVar[str] = "scripts/train_retriever.py"

    fold: int | None = None
    pooling: str | None = None
    query_prompt: str | None = None
    query_template: str | None = None
    query_max_length: int | None = None
    document_max_length: int | None = None
    loss_scale: float = 20.0
    explanations: bool = False
    seen_misconception_ids: list[int] | None = None
    extra_datasets: list[dict[str, Any]] | None = None

    @classmethod
    def load(cls, folder: str | os.PathLike, required: bool = False) -> "RetrieverSettings":
        """As `RunSettings.load`; any sentence-transformers folder is a retriever, so the file is optional."""
        return super().load(folder, required=required)


@dataclass
class RerankerSettings(RunSettings):
    """An Eedi reranker (listwise causal LM or pointwise cross-encoder) and how it scores a candidate list."""

    FILE: ClassVar[str] = "misconceptions_reranker.json"
    TASK: ClassVar[str] = "eedi-reranking"
    WRITTEN_BY: ClassVar[str] = "scripts/train_reranker.py"

    reranker_type: str = "listwise"
    candidates: str | None = None
    fold: int | None = None
    max_length: int | None = None
    rerank_top_k: int = 25
    window: int = 20
    stride: int = 10
    blend_weight: float = 0.0
    rerank_scope: str = "all"
    cpu_bf16: str = "false"  # the recipe's choice, read again where it scores (older folders: fp32)
    retriever_scale: float = 20.0
    train_rows: int = 0
    seen_misconception_ids: list[int] | None = None
    extra_candidates: list[dict[str, Any]] | None = None
    num_candidates: int | None = None
    num_negatives: int | None = None


def model_dtype(dtype: str | None) -> str | None:
    """The dtype a recipe asked for, as saved: None for the default ("auto" or unset)."""
    return dtype if dtype not in ("auto", None) else None


def quantization_of(model) -> dict[str, Any] | None:
    """The `quantization_config` of a transformers model (or a SentenceTransformer's first module) as a dict."""
    if hasattr(model, "config"):
        config = getattr(model.config, "quantization_config", None)
    else:  # a SentenceTransformer: its Transformer module holds the transformers model
        config = getattr(getattr(model[0], "auto_model", None), "config", None)
        config = getattr(config, "quantization_config", None)
    if config is None:
        return None
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def union_of_seen(seen_lists) -> set[int] | None:
    """Fold models' training misconceptions as one set (None when any model does not record its own)."""
    seen_lists = list(seen_lists)
    return None if any(ids is None for ids in seen_lists) else set().union(*seen_lists)
