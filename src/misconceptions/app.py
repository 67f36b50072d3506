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
"""The logic behind the teacher-facing app (`app/app.py`): the operator's models, validated form inputs -> tables.

The page is public, so it never takes a server path or a model id: the operator fixes the models and the
misconception list at start (`AppSettings`, from flags or environment variables; see `app_settings`),
`ServedModels.load` loads them all then, and the page names them only by their label (with `allow_model_choice`,
picked from the operator's list). Every message the page shows is built here from fixed text; none quotes a file, a
server path or an exception.

MAP: question + chosen answer + explanation -> the top `Category:Misconception` labels with their probabilities,
ranked exactly as `rank_dataframe` ranks them. Eedi: question + correct answer + wrong answer -> the nearest
misconception descriptions with their cosine similarity. Bad input raises `InputError`; `page_call` turns any
failure into a short message, and `run_with_timeout` bounds each request's time. Nothing here imports gradio.
"""

import concurrent.futures
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# The settings are re-exported: app/app.py reads everything through this module.
from .app_settings import AppSettings, ModelSpec, default_settings, parse_model_spec, parse_model_specs  # noqa: F401

# The model code is imported here, at module level and so in the importing thread: gradio runs the page's handlers
# in worker threads, and two of them importing scikit-learn for the first time at once can get a half-initialized
# module.
from .classifier import CLASSIFIER_META, LabelRanker, load_classifier, rank_dataframe, texts_for
from .eedi import query_texts, read_misconceptions_csv
from .errors import InputError
from .hub import resolve_model_dir
from .onnx_backend import resolve_backend
from .retrieval import cached_document_embeddings, encode_queries, load_retriever, search
from .settings import ClassifierSettings, RetrieverSettings


logger = logging.getLogger(__name__)

MAX_TEXT_CHARS = 2_000  # question text, explanation
MAX_SHORT_CHARS = 500  # answers, construct, subject
MAP_TOP_K, MAP_MAX_K = 3, 10
EEDI_TOP_K, EEDI_MAX_K = 10, 25
CUSTOM_QUESTION = "custom"
MAP_COLUMNS = ["Rank", "Label", "Misconception", "Probability", "Fits the question"]
EEDI_COLUMNS = ["Rank", "MisconceptionId", "Misconception", "Similarity"]
MAKE_HINT = "The demo models are made by `make demo` (`make demo DEMO_FAST=1` for quick ones)."
BUSY = "The server is busy: please try again in a moment."
# Metrics shown beside a model's name (from the all_results.json its card's metrics table is built from).
SHOWN_METRICS = {
    "eval_map@3": "validation MAP@3",
    "eval_map@25": "held-out MAP@25",
    "eval_recall@25": "recall@25",
    "eval_unseen_map@25": "unseen MAP@25",
}

_lock = threading.RLock()  # one forward pass at a time: torch and ONNX Runtime already use every core


def check_text(value: Any, field: str, max_chars: int = MAX_TEXT_CHARS, required: bool = True) -> str:
    """The stripped text of a form field; InputError when a required one is empty, any is over `max_chars`, or the
    value is not text at all (the API can send anything)."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InputError(f"{field} must be text.")
    text = value.strip()
    if required and not text:
        raise InputError(f"{field} is empty: please fill it in.")
    if len(text) > max_chars:
        raise InputError(
            f"{field} is too long ({len(text):,} characters; the limit is {max_chars:,}). Please shorten it."
        )
    return text


def check_top_k(value: Any, maximum: int) -> int:
    """The number of results to show, a whole number from 1 to `maximum` (the value itself is never echoed)."""
    message = f"The number of results must be a whole number from 1 to {maximum}."
    if isinstance(value, bool):
        raise InputError(message)
    try:
        k = int(value)
        exact = k == float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(message) from None
    if not exact or not 1 <= k <= maximum:
        raise InputError(message)
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


def markdown_text(text: str) -> str:
    """`text` escaped for a Markdown component: every ASCII punctuation mark backslash-escaped (CommonMark), so
    markup in model data or user input shows as the characters typed and never becomes HTML, a link or math."""
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", " ".join(str(text).split()))


def _with_metrics(info: str, model_dir: str) -> str:
    """`info` followed by the model's SHOWN_METRICS from its all_results.json, when it has any."""
    try:
        results = json.loads((Path(model_dir) / "all_results.json").read_text())
    except (OSError, ValueError):
        return info
    shown = [
        f"{name} {results[key]:.4f}" for key, name in SHOWN_METRICS.items() if isinstance(results.get(key), float)
    ]
    return f"{info}; {', '.join(shown)}" if shown else info


@dataclass
class ServedMap:
    label: str
    classifier: Any
    info: str


@dataclass
class ServedEedi:
    label: str
    retriever: Any
    settings: RetrieverSettings
    documents: np.ndarray
    info: str


@dataclass
class ServedModels:
    """Every model the operator configured, loaded once at start; the page looks them up by label only."""

    settings: AppSettings
    map_models: dict[str, ServedMap] = field(default_factory=dict)
    eedi_models: dict[str, ServedEedi] = field(default_factory=dict)
    misconceptions: pd.DataFrame | None = None

    @classmethod
    def load(cls, settings: AppSettings) -> "ServedModels":
        """Load every configured model (and the misconception names' embeddings); InputError naming the setting
        when one cannot be had. This is the operator's console: paths may be named here, never on the page."""
        resolve_backend(settings.backend)
        served = cls(settings)
        for spec in settings.map_models:
            model_dir = resolve_model_dir(spec.source, kind="MAP model")
            meta_file = Path(model_dir) / CLASSIFIER_META
            if not meta_file.is_file():
                raise InputError(
                    f"MAP model {spec.source!r} has no {CLASSIFIER_META} (not a classifier written by "
                    f"scripts/train_classifier.py, or still training). {MAKE_HINT}"
                )
            logger.info("Loading the MAP classifier %r from %s (backend %s)", spec.label, model_dir, settings.backend)
            classifier = load_classifier(model_dir, backend=settings.backend)
            labels, questions = len(classifier.settings.labels), len(classifier.settings.questions)
            info = f"MAP classification: {labels} labels over {questions} questions"
            served.map_models[spec.label] = ServedMap(spec.label, classifier, _with_metrics(info, model_dir))
        if settings.eedi_models:
            if not os.path.isfile(settings.misconceptions_csv):
                raise InputError(
                    f"misconception list {settings.misconceptions_csv} does not exist: expected the competition's "
                    "misconception_mapping.csv (kaggle competitions download -c "
                    "eedi-mining-misconceptions-in-mathematics)"
                )
            served.misconceptions = read_misconceptions_csv(settings.misconceptions_csv)
        names = [] if served.misconceptions is None else served.misconceptions["MisconceptionName"].tolist()
        for spec in settings.eedi_models:
            model_dir = resolve_model_dir(spec.source, kind="Eedi model")
            if not (Path(model_dir) / "modules.json").is_file():
                raise InputError(
                    f"Eedi model {spec.source!r} has no modules.json (not a sentence-transformers folder written by "
                    f"scripts/train_retriever.py, or still training). {MAKE_HINT}"
                )
            logger.info("Loading the Eedi retriever %r from %s (backend %s)", spec.label, model_dir, settings.backend)
            retriever, retriever_settings = load_retriever(model_dir, backend=settings.backend)
            if retriever_settings.explanations:
                raise InputError(
                    f"Eedi model {spec.source!r} was trained with <LLMOutput> explanations, which the page cannot "
                    "write for a typed question: serve a retriever trained without build_eedi.py --explanations"
                )
            documents, _ = cached_document_embeddings(retriever, model_dir, names, settings.misconceptions_csv)
            info = f"Eedi retrieval over {len(names):,} misconceptions"
            served.eedi_models[spec.label] = ServedEedi(
                spec.label, retriever, retriever_settings, documents, _with_metrics(info, model_dir)
            )
        return served

    def map_model(self, label: Any) -> ServedMap:
        if isinstance(label, str) and label in self.map_models:
            return self.map_models[label]
        raise InputError("That MAP model is not one this server offers: pick one from the list.")

    def eedi_model(self, label: Any) -> ServedEedi:
        if isinstance(label, str) and label in self.eedi_models:
            return self.eedi_models[label]
        raise InputError("That Eedi model is not one this server offers: pick one from the list.")

    def model_note(self, task: str, label: Any) -> str:
        """Markdown naming the model in use: its label, task and metrics (all escaped)."""
        served = self.map_model(label) if task == "map" else self.eedi_model(label)
        return f"**Model:** {markdown_text(served.label)} ({markdown_text(served.info)})"


def map_question_choices(models: ServedModels, label: Any) -> list[tuple[str, str]]:
    """Dropdown choices (shown text, QuestionId) of the questions the MAP model was trained on, plus a custom one."""
    settings = models.map_model(label).classifier.settings
    texts = settings.question_texts
    choices = [("Type my own question", CUSTOM_QUESTION)]
    for question_id in sorted(settings.questions, key=lambda q: (len(q), q)):
        text = " ".join(str(texts.get(question_id, "")).split())
        shown = f"{question_id}: {text[:90]}{'...' if len(text) > 90 else ''}" if text else f"Question {question_id}"
        choices.append((shown, question_id))
    return choices


def _known_question(settings: ClassifierSettings, question_id: Any) -> str | None:
    """The QuestionId as a string when it is one the model knows; None for a custom question; InputError else."""
    if question_id in (None, "", CUSTOM_QUESTION):
        return None
    if isinstance(question_id, (str, int)) and str(question_id) in settings.questions:
        return str(question_id)
    raise InputError("That question is not one the MAP model was trained on: pick one from the list.")


def map_question_details(models: ServedModels, label: Any, question_id: Any) -> tuple[str, str]:
    """(question text, a note with the question's correct answer) of a known question; empty for a custom one."""
    settings = models.map_model(label).classifier.settings
    known = _known_question(settings, question_id)
    if known is None:
        return "", "Type the question, the student's chosen answer and their explanation."
    text = str(settings.question_texts.get(known, ""))
    correct = settings.questions[known].get("correct_answer")
    note = f"Question {markdown_text(known)}" + (
        f": the correct answer is {markdown_text(correct)}." if correct else "."
    )
    return text, note


def predict_map(
    models: ServedModels,
    label: Any,
    question_id: Any,
    question_text: Any,
    answer: Any,
    explanation: Any,
    top_k: Any = MAP_TOP_K,
) -> tuple[pd.DataFrame, str]:
    """(the top labels for one student answer: Rank, Label, Misconception, Probability, Fits the question; the text
    the model read). `question_id` is a QuestionId the model knows (labels are then restricted and the True_/False_
    prefix derived as in `rank_dataframe`) or `CUSTOM_QUESTION`/empty for a new question (its text is required)."""
    served = models.map_model(label)
    settings = served.classifier.settings
    known = _known_question(settings, question_id)
    question_text = check_text(question_text, "The question", required=known is None)
    answer = check_text(answer, "The student's chosen answer", MAX_SHORT_CHARS)
    explanation = check_text(explanation, "The student's explanation")
    k = check_top_k(top_k, MAP_MAX_K)
    row = {
        "row_id": "0",
        "QuestionId": known or "",
        "QuestionText": question_text,
        "MC_Answer": answer,
        "StudentExplanation": explanation,
    }
    frame = pd.DataFrame([row])
    with _lock:
        ranked, scores = rank_dataframe(served.classifier, frame, top_k=k, batch_size=1, return_scores=True)
    # rank_dataframe puts the labels that fit the question (seen for it, right True_/False_) first; say which.
    ranker = LabelRanker(
        settings.model_labels, settings.labels, settings.questions, settings.restrict_labels, settings.derive_prefix
    )
    allowed, _ = ranker.allowed(row["QuestionId"], answer)
    fits = dict(zip(ranker.final_labels, allowed, strict=True))
    table = pd.DataFrame(
        {
            "Rank": range(1, len(ranked[0]) + 1),
            "Label": ranked[0],
            "Misconception": [readable_misconception(name) for name in ranked[0]],
            "Probability": [round(s, 4) for s in scores[0]],
            "Fits the question": ["yes" if fits[name] else "no" for name in ranked[0]],
        },
        columns=MAP_COLUMNS,
    )
    return table, texts_for(frame, settings.text_template)[0]


def eedi_query_text(
    question: str, correct: str, wrong: str, construct: str = "", subject: str = "", template: str | None = None
) -> str:
    """The retriever's query for one wrong answer: the reference query's structure, or the model's saved template."""
    row = {
        "QuestionText": question,
        "CorrectAnswerText": correct,
        "AnswerText": wrong,
        "ConstructName": construct,
        "SubjectName": subject,
    }
    return query_texts(pd.DataFrame([row]), template)[0]


def predict_eedi(
    models: ServedModels,
    label: Any,
    question: Any,
    correct: Any,
    wrong: Any,
    construct: Any = "",
    subject: Any = "",
    top_k: Any = EEDI_TOP_K,
) -> tuple[pd.DataFrame, str]:
    """(the misconceptions nearest to one wrong answer: Rank, MisconceptionId, Misconception, Similarity; the
    query the retriever read)."""
    served = models.eedi_model(label)
    question = check_text(question, "The question")
    correct = check_text(correct, "The correct answer", MAX_SHORT_CHARS)
    wrong = check_text(wrong, "The wrong answer", MAX_SHORT_CHARS)
    construct = check_text(construct, "The construct", MAX_SHORT_CHARS, required=False)
    subject = check_text(subject, "The subject", MAX_SHORT_CHARS, required=False)
    if " ".join(wrong.split()) == " ".join(correct.split()):
        raise InputError("The wrong answer is the same as the correct answer: enter the answer the student gave.")
    k = check_top_k(top_k, EEDI_MAX_K)
    query = eedi_query_text(question, correct, wrong, construct, subject, served.settings.query_template)
    with _lock:
        scores, indices = search(encode_queries(served.retriever, [query], batch_size=1), served.documents, k)
    names = models.misconceptions["MisconceptionName"].tolist()
    ids = models.misconceptions["MisconceptionId"].to_numpy()
    table = pd.DataFrame(
        {
            "Rank": range(1, len(indices[0]) + 1),
            "MisconceptionId": [int(i) for i in ids[indices[0]]],
            "Misconception": [names[i] for i in indices[0]],
            "Similarity": [round(float(s), 4) for s in scores[0]],
        },
        columns=EEDI_COLUMNS,
    )
    return table, query


class RequestTimeout(Exception):
    """A request ran past the operator's time limit."""


_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def run_with_timeout(fn: Callable[..., Any], *args: Any, timeout: float, workers: int = 2) -> Any:
    """`fn(*args)` on a bounded worker pool, or RequestTimeout after `timeout` seconds. A computation that overruns
    keeps its worker until it ends (Python cannot stop a thread); the pool's size bounds how many can."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="predict")
    future = _executor.submit(fn, *args)
    try:
        return future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise RequestTimeout from None


def page_call(
    fn: Callable[..., Any], *args: Any, what: str = "the prediction", timeout: float | None = None, workers: int = 2
) -> tuple[Any, str]:
    """Run `fn(*args)` for the page: (result, "") or (None, a short Markdown message). The message is one of ours:
    never a traceback, an exception's text, a file's contents or a server path (those go to the server log, with a
    reference the page shows)."""
    try:
        if timeout is None:
            return fn(*args), ""
        return run_with_timeout(fn, *args, timeout=timeout, workers=workers), ""
    except InputError as err:
        return None, f"**Please check:** {markdown_text(_one_line(err))}"
    except RequestTimeout:
        logger.warning("%s ran past its time limit of %s s", what, timeout)
        return None, f"**{markdown_text(what[:1].upper() + what[1:])} took too long** (over {timeout:g} s). {BUSY}"
    except Exception:  # the page shows a short message; the traceback goes to the server log only
        reference = uuid.uuid4().hex[:8]
        logger.exception("The app failed during %s (reference %s)", what, reference)
        return None, f"**Something went wrong during {markdown_text(what)}.** Reference {reference} in the server log."


def _one_line(err: BaseException) -> str:
    return re.sub(r"\s+", " ", str(err)).strip()
