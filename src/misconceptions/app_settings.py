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
"""What the app's operator fixes at start: the models (`LABEL=SOURCE` specs), the misconception list, the backend
and the load limits, from flags or environment variables.

The page is public, so a model is shown and accepted only by its label (`LABEL_PATTERN`: no slashes of a path); its
source (a folder, a Hub id or a `builtin:` name) stays on the server. `misconceptions.app` loads what these settings
name and answers the page's requests.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .sources import is_hub_id, split_revision


LABEL_PATTERN = re.compile(r"[\w][\w .:@+-]{0,79}")  # what a model label may be: no slashes of a path


@dataclass(frozen=True)
class ModelSpec:
    """An operator-configured model: `label` is all the page ever shows or accepts; `source` (a folder, a Hub id or
    a `builtin:` name) stays on the server."""

    label: str
    source: str


def parse_model_spec(text: str, setting: str) -> ModelSpec:
    """`LABEL=SOURCE` or `SOURCE` (labelled by its Hub id, builtin name or folder name) -> ModelSpec."""
    text = text.strip()
    label, sep, source = text.partition("=")
    if not sep:  # a Hub id or builtin name is its own label; a folder is shown by its name, never its path
        source = text.rstrip("/")
        hub_or_builtin = source.startswith("builtin:") or is_hub_id(split_revision(source)[0])
        label = source if hub_or_builtin else Path(source).name
    label, source = label.strip(), source.strip()
    if not source:
        raise InputError(f"{setting}: empty model in {text!r}; expected LABEL=SOURCE or SOURCE")
    if not LABEL_PATTERN.fullmatch(label.replace("/", "-")):
        raise InputError(
            f"{setting}: model label {label!r} must be 1-80 letters, digits, spaces or .:@+-_ "
            "(give one as LABEL=SOURCE)"
        )
    return ModelSpec(label, source)


def parse_model_specs(values: list[str] | str | None, setting: str) -> list[ModelSpec]:
    """Model specs from repeated flags or one comma-separated environment variable; labels must be unique."""
    if isinstance(values, str):
        values = [values]
    items = [part for value in values or [] for part in value.split(",") if part.strip()]
    specs = [parse_model_spec(item, setting) for item in items]
    labels = [spec.label for spec in specs]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise InputError(f"{setting}: the label(s) {duplicates} are given twice; name them with LABEL=SOURCE")
    return specs


@dataclass
class AppSettings:
    """What the operator fixes: the models (the first of each list is the default), the misconception list, the
    inference backend, whether visitors may pick among the models, and the load limits."""

    map_models: list[ModelSpec]
    eedi_models: list[ModelSpec]
    misconceptions_csv: str
    backend: str = "auto"
    allow_model_choice: bool = False
    concurrency_limit: int = 2  # requests computed at once (they share the cores)
    max_queue: int = 32  # requests waiting; more are refused with the busy message
    request_timeout: float = 30.0  # seconds one request may take before it is answered with a time-out message

    def __post_init__(self) -> None:
        for task, specs in (("MAP", self.map_models), ("Eedi", self.eedi_models)):
            if len(specs) > 1 and not self.allow_model_choice:
                raise InputError(
                    f"{len(specs)} {task} models given: give one, or pass --allow_model_choice to let visitors pick "
                    "among them"
                )
        if self.concurrency_limit < 1 or self.max_queue < 1 or self.request_timeout <= 0:
            raise InputError("concurrency_limit and max_queue must be at least 1, request_timeout above 0")


def default_settings(repo_root: str | os.PathLike = ".") -> AppSettings:
    """Defaults: env MISCONCEPTIONS_MAP_MODEL / _EEDI_MODEL (comma-separated LABEL=SOURCE lists) / _MAPPING_CSV /
    _BACKEND / _ALLOW_MODEL_CHOICE / _CONCURRENCY / _MAX_QUEUE / _REQUEST_TIMEOUT, else the demo models, the shared
    data, the `auto` backend and the limits above."""
    root = Path(repo_root)
    data = Path(os.environ.get("MISCONCEPTIONS_DATA", root.parent / "shared" / "data"))
    env = os.environ.get
    return AppSettings(
        map_models=parse_model_specs(
            env("MISCONCEPTIONS_MAP_MODEL", str(root / "data" / "demo" / "map-minilm-cpu")), "MISCONCEPTIONS_MAP_MODEL"
        ),
        eedi_models=parse_model_specs(
            env("MISCONCEPTIONS_EEDI_MODEL", str(root / "data" / "demo" / "eedi-minilm-cpu-round2-continued")),
            "MISCONCEPTIONS_EEDI_MODEL",
        ),
        misconceptions_csv=env("MISCONCEPTIONS_MAPPING_CSV", str(data / "eedi" / "misconception_mapping.csv")),
        backend=env("MISCONCEPTIONS_BACKEND", "auto"),
        allow_model_choice=env("MISCONCEPTIONS_ALLOW_MODEL_CHOICE", "").lower() in ("1", "true", "yes"),
        concurrency_limit=int(env("MISCONCEPTIONS_CONCURRENCY", "2")),
        max_queue=int(env("MISCONCEPTIONS_MAX_QUEUE", "32")),
        request_timeout=float(env("MISCONCEPTIONS_REQUEST_TIMEOUT", "30")),
    )
