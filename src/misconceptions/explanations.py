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
"""LLM explanations of wrong answers: the Eedi reference solution's `<LLMOutput>` field, written once per distinct
(question, wrong answer) and cached.

scripts/explain.py asks a generation backend (`generation`) why a student chose each wrong answer and appends the
answers to `explanations.jsonl`, keyed by a hash of the prompt's texts, so a killed run resumes and a second CSV
reuses what the first wrote. `attach_explanations` fills the `LLMOutput` column of pivoted Eedi rows from such a
folder; the Eedi query then ends with it (`eedi.format_query`), for building datasets and for retrieval alike.
"""

import hashlib
import os
import re
from pathlib import Path

import pandas as pd

from .errors import InputError
from .generation import Conversation
from .io_utils import append_jsonl, read_jsonl


EXPLAIN_SYSTEM_PROMPT = (
    "You are an experienced maths teacher. A student answered a multiple-choice question wrongly. In one or two "
    "sentences, explain the mistake in their thinking that leads to their answer. Do not repeat the question."
)
EXPLAIN_USER_TEMPLATE = (
    "Question: {QuestionText}\nCorrect answer: {CorrectAnswerText}\nStudent's answer: {AnswerText}\n"
    "Construct: {ConstructName}\nSubject: {SubjectName}"
)
EXPLANATIONS_FILE = "explanations.jsonl"
EXPLAIN_FIELDS = ("QuestionText", "CorrectAnswerText", "AnswerText", "ConstructName", "SubjectName")


def explanation_key(row: dict) -> str:
    """Cache key of one (question, wrong answer): a hash of the texts the prompt is made of."""
    return hashlib.sha256("\x1f".join(str(row[f]) for f in EXPLAIN_FIELDS).encode()).hexdigest()[:32]


def explain_conversation(row: dict) -> Conversation:
    return [
        {"role": "system", "content": EXPLAIN_SYSTEM_PROMPT},
        {"role": "user", "content": EXPLAIN_USER_TEMPLATE.format(**row)},
    ]


def read_explanations(folder: str | os.PathLike) -> dict[str, str]:
    """key -> explanation from a folder written by scripts/explain.py (a partial last line dropped)."""
    file = Path(folder) / EXPLANATIONS_FILE
    if not file.is_file():
        raise InputError(f"{folder}: no {EXPLANATIONS_FILE}; write it with scripts/explain.py")
    return {r["key"]: r["explanation"] for r in read_jsonl(file)}


def clean_explanation(text: str, max_chars: int = 600) -> str:
    """One paragraph: whitespace collapsed, cut at `max_chars` on a sentence or word end."""
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    end = max(cut.rfind(". "), cut.rfind("? "), cut.rfind("! "))
    return cut[: end + 1] if end > 0 else cut.rsplit(" ", 1)[0]


def explain_rows(backend, pairs: pd.DataFrame, folder: str | os.PathLike, batch_size: int = 16) -> dict:
    """Write an explanation for every pivoted row whose key is not cached in `folder` yet, appended per batch (a
    killed run keeps what it wrote). Returns counts: rows, distinct inputs, cached before, written now."""
    from tqdm.auto import tqdm

    missing = [c for c in EXPLAIN_FIELDS if c not in pairs.columns]
    if missing:
        raise InputError(f"rows to explain lack columns {missing}")
    file = Path(folder) / EXPLANATIONS_FILE
    file.parent.mkdir(parents=True, exist_ok=True)
    cache = {r["key"]: r["explanation"] for r in read_jsonl(file, repair=True)}
    distinct = {explanation_key(row): row for row in pairs.to_dict("records")}
    todo = [(key, row) for key, row in distinct.items() if key not in cache]
    with tqdm(total=len(todo), desc="explanations", unit="row") as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            replies = backend.generate([explain_conversation(row) for _, row in batch], 1)
            append_jsonl(
                file,
                [
                    {"key": key, "explanation": clean_explanation(texts[0])}
                    for (key, _), texts in zip(batch, replies, strict=True)
                ],
            )
            bar.update(len(batch))
    return {"rows": len(pairs), "distinct": len(distinct), "cached": len(distinct) - len(todo), "written": len(todo)}


def attach_explanations(pairs: pd.DataFrame, folder: str | os.PathLike) -> pd.DataFrame:
    """Fill `LLMOutput` for every pivoted row from an explanations folder; every row must have one."""
    cache = read_explanations(folder)
    keys = [explanation_key(row) for row in pairs.to_dict("records")]
    missing = [qa for qa, key in zip(pairs["QuestionId_Answer"], keys, strict=True) if key not in cache]
    if missing:
        raise InputError(
            f"{folder}: no explanation for {len(missing)} of {len(pairs)} rows (e.g. {', '.join(missing[:3])}); "
            "run scripts/explain.py on the same CSV to finish them"
        )
    return pairs.assign(LLMOutput=[cache[key] for key in keys])
