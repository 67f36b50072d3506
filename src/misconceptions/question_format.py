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
"""What a synthetic question is: its fields, the JSON schema vLLM can constrain decoding to, the reply's prefill, and
the validation and identity of one generation.

This is the contract between the prompt (`synthetic`), the backends' structured outputs (`generation`) and the
parser: every generated text goes through `parse_question`, which returns the question or the reason it is invalid
(`INVALID_REASONS`), and `question_key`, which deduplicates questions across runs.
"""

import hashlib
import json
import re


LETTERS = ("A", "B", "C", "D")
QUESTION_FIELDS = (
    "ConstructName",
    "SubjectName",
    "QuestionText",
    "AnswerAText",
    "AnswerBText",
    "AnswerCText",
    "AnswerDText",
    "CorrectAnswer",
    "MisconceptionAnswer",
)
# The JSON schema of one question, for vLLM's structured outputs (`guided_json`).
QUESTION_SCHEMA = {
    "type": "object",
    "properties": {
        name: {"type": "string", "enum": list(LETTERS)} if name.endswith("Answer") else {"type": "string"}
        for name in QUESTION_FIELDS
    },
    "required": list(QUESTION_FIELDS),
    "additionalProperties": False,
}
INVALID_REASONS = ("not_json", "missing_fields", "empty_field", "bad_letter", "duplicate_options", "correct_is_wrong")
# The reply is started for the model, so even a small model answers in the expected JSON shape.
QUESTION_PREFILL = '{"ConstructName": "'


# A valid JSON escape is kept; a lone backslash such as LaTeX's \frac is doubled (small models rarely escape LaTeX).
# \n and \t count as escapes only when no letter follows (\neq and \times are LaTeX).
_ESCAPE = re.compile(r'\\(?:(?P<keep>\\|"|/|u[0-9a-fA-F]{4}|[nt](?![A-Za-z]))|(?P<lone>.))', re.DOTALL)


def _escape_lone_backslashes(text: str) -> str:
    return _ESCAPE.sub(lambda m: m.group(0) if m.group("keep") is not None else "\\\\" + m.group("lone"), text)


_LAST_FIELD = re.compile(r'"MisconceptionAnswer"\s*:\s*"[^"]*"')


def _decode_object(text: str) -> object | None:
    """The JSON value at the start of `text`; when a small model keeps going after the last field instead of
    closing the object (it repeats the field, or starts another), the object is closed right after that field."""
    decoder = json.JSONDecoder(strict=False)
    try:
        return decoder.raw_decode(text)[0]
    except ValueError:
        pass
    last = _LAST_FIELD.search(text)
    if last is None:
        return None
    try:
        return decoder.raw_decode(text[: last.end()] + "}")[0]
    except ValueError:
        return None


def _normalized(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def parse_question(text: str) -> tuple[dict | None, str]:
    """Validate one generation: (the question, "valid") or (None, the reason it is invalid).

    The first JSON object in the text must have every field of QUESTION_FIELDS as non-empty text, letters A-D for
    CorrectAnswer and MisconceptionAnswer that differ, and four different options. An object left open after its
    last field (MisconceptionAnswer) is closed there; LaTeX backslashes the model did not escape are kept.
    """
    start = text.find("{")
    if start < 0:
        return None, "not_json"
    record = _decode_object(_escape_lone_backslashes(text[start:]))
    if record is None:
        return None, "not_json"
    if not isinstance(record, dict) or any(f not in record for f in QUESTION_FIELDS):
        return None, "missing_fields"
    question = {}
    for name in QUESTION_FIELDS:
        value = record[name]
        if not isinstance(value, str | int | float) or isinstance(value, bool) or not str(value).strip():
            return None, "empty_field"
        question[name] = str(value).strip()
    for name in ("CorrectAnswer", "MisconceptionAnswer"):
        question[name] = question[name].upper()
        if question[name] not in LETTERS:
            return None, "bad_letter"
    if len({_normalized(question[f"Answer{letter}Text"]) for letter in LETTERS}) < len(LETTERS):
        return None, "duplicate_options"
    if question["CorrectAnswer"] == question["MisconceptionAnswer"]:
        return None, "correct_is_wrong"
    return question, "valid"


def question_key(question: dict) -> str:
    """Identity for deduplication: the question text and its four options, whitespace- and case-insensitive."""
    parts = [question["QuestionText"], *(question[f"Answer{letter}Text"] for letter in LETTERS)]
    return hashlib.sha256("\x1f".join(_normalized(p) for p in parts).encode()).hexdigest()
