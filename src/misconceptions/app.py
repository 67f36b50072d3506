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
"""The logic behind the teacher-facing app (`app/app.py`): validated form inputs -> the tables the page shows.

MAP: question + chosen answer + explanation -> the top `Category:Misconception` labels with their probabilities,
ranked exactly as `rank_dataframe` ranks them (TF-IDF blend, question restriction, derived prefix). Eedi: question +
correct answer + wrong answer -> the nearest misconception descriptions with their cosine similarity. Models are
loaded lazily, once per path (a local folder, a Hub id or a `builtin:` name). Bad input raises `InputError`;
`page_call` turns any failure into a short message for the page, never a traceback. Nothing here imports gradio.
"""

import json
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import InputError


logger = logging.getLogger(__name__)

MAX_TEXT_CHARS = 2_000  # question text, explanation
MAX_SHORT_CHARS = 500  # answers, construct, subject
MAP_TOP_K, MAP_MAX_K = 3, 10
EEDI_TOP_K, EEDI_MAX_K = 10, 25
CUSTOM_QUESTION = "custom"
MAP_COLUMNS = ["Rank", "Label", "Misconception", "Probability", "Fits the question"]
EEDI_COLUMNS = ["Rank", "MisconceptionId", "Misconception", "Similarity"]
MAKE_HINT = "The demo models are made by `make demo` (`make demo DEMO_FAST=1` for quick ones)."
MAP_EXPECTED = (
    "a folder written by scripts/train_classifier.py (with misconceptions_classifier.json) or a Hub model id"
)
EEDI_EXPECTED = (
    "a folder written by scripts/train_retriever.py (any sentence-transformers folder), a Hub model id, "
    "or builtin:all-MiniLM-L6-v2"
)

_lock = threading.RLock()
_classifiers: dict[str, Any] = {}
_retrievers: dict[str, tuple[Any, dict[str, Any]]] = {}
_misconceptions: dict[tuple[str, int, int], pd.DataFrame] = {}
_documents: dict[tuple[str, str, int, int], np.ndarray] = {}
_backend = "auto"  # the inference backend of every model loaded from now on (set_backend)


@dataclass
class AppSettings:
    """The models, the misconception list and the inference backend the app starts with."""

    map_model: str
    eedi_model: str
    misconceptions_csv: str
    backend: str = "auto"


def default_settings(repo_root: str | os.PathLike = ".") -> AppSettings:
    """Defaults: env MISCONCEPTIONS_MAP_MODEL / _EEDI_MODEL / _MAPPING_CSV / _BACKEND, else the demo models, the
    shared data and the `auto` backend."""
    root = Path(repo_root)
    data = Path(os.environ.get("MISCONCEPTIONS_DATA", root.parent / "shared" / "data"))
    return AppSettings(
        map_model=os.environ.get("MISCONCEPTIONS_MAP_MODEL", str(root / "data" / "demo" / "map-minilm-cpu")),
        eedi_model=os.environ.get("MISCONCEPTIONS_EEDI_MODEL", str(root / "data" / "demo" / "eedi-minilm-cpu")),
        misconceptions_csv=os.environ.get(
            "MISCONCEPTIONS_MAPPING_CSV", str(data / "eedi" / "misconception_mapping.csv")
        ),
        backend=os.environ.get("MISCONCEPTIONS_BACKEND", "auto"),
    )


def import_model_code() -> None:
    """Import the modules the page's handlers use, once, in the calling thread. Gradio runs handlers in worker
    threads; two of them importing scikit-learn for the first time at once (the MAP and Eedi tabs load together)
    can get a half-initialized module ("cannot import name 'clone' from partially initialized module")."""
    from . import classifier, eedi, retrieval  # noqa: F401


def set_backend(backend: str) -> None:
    """The inference backend (`onnx_backend.BACKENDS`: auto, torch, onnx, onnx-int8) for models loaded from now on;
    InputError for an unknown name. `auto` is ONNX Runtime on a CPU and torch on a GPU, as in the scripts."""
    from .onnx_backend import resolve_backend

    global _backend
    resolve_backend(backend)
    _backend = backend


def check_text(value: str | None, field: str, max_chars: int = MAX_TEXT_CHARS, required: bool = True) -> str:
    """The stripped text of a form field; InputError when a required one is empty or any is over `max_chars`."""
    text = (value or "").strip()
    if required and not text:
        raise InputError(f"{field} is empty: please fill it in.")
    if len(text) > max_chars:
        raise InputError(
            f"{field} is too long ({len(text):,} characters; the limit is {max_chars:,}). Please shorten it."
        )
    return text


def check_top_k(value: Any, maximum: int) -> int:
    """The number of results to show, an integer from 1 to `maximum`."""
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise InputError(f"The number of results must be a whole number from 1 to {maximum}, got {value!r}.") from None
    if not 1 <= k <= maximum or k != float(value):
        raise InputError(f"The number of results must be a whole number from 1 to {maximum}, got {value!r}.")
    return k


def readable_misconception(label: str) -> str:
    """`False_Misconception:Incomplete` -> `Incomplete`; `True_Correct:NA` -> `None (correct)`."""
    prefix, _, rest = label.partition("_")
    suffix = rest if prefix in ("True", "False") else label
    category, _, misconception = suffix.partition(":")
    if misconception and misconception != "NA":
        return misconception
    return {"Correct": "None (correct reasoning)", "Neither": "None (neither correct nor a known misconception)"}.get(
        category, category or label
    )


def resolve_model(name: str | None, kind: str, expected: str) -> str:
    """A local folder for a model given as a folder, a Hub id or a `builtin:` name; a clear InputError otherwise."""
    from .hub import is_hub_id, resolve_model_dir, split_revision
    from .model_utils import resolve_model_path

    name = (name or "").strip()
    if not name:
        raise InputError(f"No {kind} model given: enter {expected}.")
    path = resolve_model_path(name)
    if os.path.isdir(path):
        return path
    if not is_hub_id(split_revision(path)[0]) or os.path.exists(os.path.expanduser(path)):
        problem = "is not a folder" if os.path.exists(os.path.expanduser(path)) else "does not exist"
        raise InputError(f"{kind} model '{name}' {problem} on this machine. Expected {expected}. {MAKE_HINT}")
    try:
        return resolve_model_dir(path)
    except InputError:
        raise InputError(
            f"{kind} model '{name}' is not a folder on this machine and could not be downloaded from the Hub. "
            f"Expected {expected}. {MAKE_HINT}"
        ) from None


def _classifier_meta(model_dir: str, name: str) -> dict[str, Any]:
    from .classifier import CLASSIFIER_META

    meta_file = Path(model_dir) / CLASSIFIER_META
    if not meta_file.is_file():
        raise InputError(
            f"MAP model '{name}' has no {CLASSIFIER_META} (not a classifier, or still training). "
            f"Expected {MAP_EXPECTED}. {MAKE_HINT}"
        )
    return json.loads(meta_file.read_text())


def load_map_classifier(name: str) -> Any:
    """The `Classifier` for a model path or Hub id, loaded once and kept."""
    from .classifier import load_classifier

    model_dir = resolve_model(name, "MAP", MAP_EXPECTED)
    key = f"{Path(model_dir).resolve()} ({_backend})"
    with _lock:
        if key not in _classifiers:
            _classifier_meta(model_dir, name)  # a clear message before any weights are read
            logger.info("Loading the MAP classifier %s (backend %s)", model_dir, _backend)
            _classifiers[key] = load_classifier(model_dir, backend=_backend)
        return _classifiers[key]


def map_question_choices(name: str) -> list[tuple[str, str]]:
    """Dropdown choices (shown text, QuestionId) of the questions the MAP model was trained on, plus a custom one."""
    model_dir = resolve_model(name, "MAP", MAP_EXPECTED)
    meta = _classifier_meta(model_dir, name)
    texts = meta.get("question_texts") or {}
    choices = [("Type my own question", CUSTOM_QUESTION)]
    for question_id in sorted(meta.get("questions", {}), key=lambda q: (len(q), q)):
        text = " ".join(str(texts.get(question_id, "")).split())
        shown = f"{question_id}: {text[:90]}{'...' if len(text) > 90 else ''}" if text else f"Question {question_id}"
        choices.append((shown, question_id))
    return choices


def map_question_details(name: str, question_id: str | None) -> tuple[str, str]:
    """(question text, a note with the question's correct answer) of a known question; empty for a custom one."""
    if not question_id or question_id == CUSTOM_QUESTION:
        return "", "Type the question, the student's chosen answer and their explanation."
    meta = _classifier_meta(resolve_model(name, "MAP", MAP_EXPECTED), name)
    info = meta.get("questions", {}).get(str(question_id))
    if info is None:
        raise InputError(f"Question {question_id} is not one the MAP model was trained on; pick one from the list.")
    text = str((meta.get("question_texts") or {}).get(str(question_id), ""))
    correct = info.get("correct_answer")
    note = f"Question {question_id}" + (f": the correct answer is `{correct}`." if correct else ".")
    return text, note


def predict_map(
    model: str,
    question_id: str | None,
    question_text: str | None,
    answer: str | None,
    explanation: str | None,
    top_k: Any = MAP_TOP_K,
) -> pd.DataFrame:
    """The top labels for one student answer: Rank, Label, Misconception (readable), Probability.

    `question_id` is a QuestionId the model knows (labels are then restricted and the True_/False_ prefix derived as
    in `rank_dataframe`) or `CUSTOM_QUESTION`/empty for a new question (the question text is then required).
    """
    from .classifier import LabelRanker, rank_dataframe

    known = bool(question_id) and question_id != CUSTOM_QUESTION
    question_text = check_text(question_text, "The question", required=not known)
    answer = check_text(answer, "The student's chosen answer", MAX_SHORT_CHARS)
    explanation = check_text(explanation, "The student's explanation")
    k = check_top_k(top_k, MAP_MAX_K)
    classifier = load_map_classifier(model)
    if known and str(question_id) not in classifier.meta.get("questions", {}):
        raise InputError(f"Question {question_id} is not one the MAP model was trained on; pick one from the list.")
    row = {
        "row_id": "0",
        "QuestionId": str(question_id) if known else "",
        "QuestionText": question_text,
        "MC_Answer": answer,
        "StudentExplanation": explanation,
    }
    with _lock:  # one forward pass at a time: torch already uses every core
        ranked, scores = rank_dataframe(classifier, pd.DataFrame([row]), top_k=k, batch_size=1, return_scores=True)
    # rank_dataframe puts the labels that fit the question (seen for it, right True_/False_) first; say which.
    meta = classifier.meta
    ranker = LabelRanker(
        meta["model_labels"], meta["labels"], meta["questions"], meta["restrict_labels"], meta["derive_prefix"]
    )
    allowed, _ = ranker.allowed(row["QuestionId"], answer)
    fits = dict(zip(ranker.final_labels, allowed, strict=True))
    return pd.DataFrame(
        {
            "Rank": range(1, len(ranked[0]) + 1),
            "Label": ranked[0],
            "Misconception": [readable_misconception(label) for label in ranked[0]],
            "Probability": [round(s, 4) for s in scores[0]],
            "Fits the question": ["yes" if fits[label] else "no" for label in ranked[0]],
        },
        columns=MAP_COLUMNS,
    )


def load_eedi_retriever(name: str) -> tuple[Any, dict[str, Any], str]:
    """(SentenceTransformer, its metadata, its folder) for a model path, Hub id or builtin name, loaded once."""
    from .retrieval import load_retriever

    model_dir = resolve_model(name, "Eedi", EEDI_EXPECTED)
    key = f"{Path(model_dir).resolve()} ({_backend})"
    with _lock:
        if key not in _retrievers:
            if not (Path(model_dir) / "modules.json").is_file():
                raise InputError(
                    f"Eedi model '{name}' has no modules.json (not a retriever, or still training). "
                    f"Expected {EEDI_EXPECTED}. {MAKE_HINT}"
                )
            logger.info("Loading the Eedi retriever %s (backend %s)", model_dir, _backend)
            _retrievers[key] = load_retriever(model_dir, backend=_backend)
        model, meta = _retrievers[key]
    return model, meta, model_dir


def load_misconceptions(path: str) -> pd.DataFrame:
    """The validated misconception_mapping.csv (MisconceptionId, MisconceptionName), read once per file version."""
    from .eedi import read_misconceptions_csv

    path = (path or "").strip()
    if not path:
        raise InputError("No misconception list given: enter the path of misconception_mapping.csv.")
    if not os.path.isfile(path):
        raise InputError(
            f"Misconception list '{path}' does not exist. Expected the competition's misconception_mapping.csv "
            "(kaggle competitions download -c eedi-mining-misconceptions-in-mathematics)."
        )
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    with _lock:
        if key not in _misconceptions:
            _misconceptions[key] = read_misconceptions_csv(path)
        return _misconceptions[key]


def check_eedi_settings(model: str, misconceptions_csv: str) -> str:
    """A one-line readiness note for the Eedi tab, checking paths only (the weights load on the first search)."""
    names = load_misconceptions(misconceptions_csv)
    resolve_model(model, "Eedi", EEDI_EXPECTED)
    return f"Eedi model `{model.strip()}` found, with {len(names):,} misconceptions to search."


def eedi_query_text(
    question: str, correct: str, wrong: str, construct: str = "", subject: str = "", template: str | None = None
) -> str:
    """The retriever's query for one wrong answer: the seed's structure, or the model's saved query template."""
    from .eedi import query_texts

    row = {
        "QuestionText": question,
        "CorrectAnswerText": correct,
        "AnswerText": wrong,
        "ConstructName": construct,
        "SubjectName": subject,
    }
    return query_texts(pd.DataFrame([row]), template)[0]


def predict_eedi(
    model: str,
    misconceptions_csv: str,
    question: str | None,
    correct: str | None,
    wrong: str | None,
    construct: str | None = "",
    subject: str | None = "",
    top_k: Any = EEDI_TOP_K,
) -> pd.DataFrame:
    """The misconceptions nearest to one wrong answer: Rank, MisconceptionId, Misconception, Similarity."""
    from .retrieval import cached_document_embeddings, encode_queries, search

    question = check_text(question, "The question")
    correct = check_text(correct, "The correct answer", MAX_SHORT_CHARS)
    wrong = check_text(wrong, "The wrong answer", MAX_SHORT_CHARS)
    construct = check_text(construct, "The construct", MAX_SHORT_CHARS, required=False)
    subject = check_text(subject, "The subject", MAX_SHORT_CHARS, required=False)
    if " ".join(wrong.split()) == " ".join(correct.split()):
        raise InputError("The wrong answer is the same as the correct answer: enter the answer the student gave.")
    k = check_top_k(top_k, EEDI_MAX_K)
    misconceptions = load_misconceptions(misconceptions_csv)
    retriever, meta, model_dir = load_eedi_retriever(model)
    names = misconceptions["MisconceptionName"].tolist()
    stat = os.stat(misconceptions_csv)
    backend = getattr(retriever, "backend", "torch")
    key = (
        f"{Path(model_dir).resolve()} ({backend})",
        str(Path(misconceptions_csv).resolve()),
        stat.st_size,
        stat.st_mtime_ns,
    )
    with _lock:
        if key not in _documents:
            _documents[key], _ = cached_document_embeddings(retriever, model_dir, names, misconceptions_csv)
        documents = _documents[key]
        query = eedi_query_text(question, correct, wrong, construct, subject, meta.get("query_template"))
        scores, indices = search(encode_queries(retriever, [query], batch_size=1), documents, k)
    ids = misconceptions["MisconceptionId"].to_numpy()
    return pd.DataFrame(
        {
            "Rank": range(1, len(indices[0]) + 1),
            "MisconceptionId": [int(i) for i in ids[indices[0]]],
            "Misconception": [names[i] for i in indices[0]],
            "Similarity": [round(float(s), 4) for s in scores[0]],
        },
        columns=EEDI_COLUMNS,
    )


def page_call(fn: Callable[..., Any], *args: Any, what: str = "the prediction") -> tuple[Any, str]:
    """Run `fn(*args)` for the page: (result, "") or (None, a one-paragraph message). Never lets a traceback out."""
    try:
        return fn(*args), ""
    except (InputError, FileNotFoundError) as err:
        return None, f"**Please check:** {_one_line(err)}"
    except Exception as err:  # the page shows a short message; the traceback goes to the server log only
        logger.exception("The app failed during %s", what)
        return None, f"**Something went wrong during {what}** ({type(err).__name__}: {_one_line(err)[:300]}). "


def _one_line(err: BaseException) -> str:
    return re.sub(r"\s+", " ", str(err)).strip()
