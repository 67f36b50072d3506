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
"""Synthetic Eedi questions, for misconceptions that have no (or little) training data.

An LLM is asked, for one misconception at a time, to write a multiple-choice question whose wrong option shows it,
as one JSON object; few-shot turns show real questions whose construct and misconception read alike (TF-IDF).
The backends and their settings are in `generation`, the question's format and validation in `question_format`:
invalid outputs are dropped and counted by reason, never written as rows, and duplicates are dropped. Results are
appended to a JSONL file, one line per misconception, so a killed run resumes where it stopped; `synthetic_dataset`
turns them into labelled pairs in the Eedi schema. `description_pairs` is the generator-free variant: each
misconception's own description as the query for it.
"""

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from .eedi import MISCONCEPTIONS_SPLIT, PAIR_FEATURES, pivot_wrong_answers
from .errors import InputError
from .generation import Conversation, GenerationSettings
from .io_utils import append_jsonl, read_jsonl
from .question_format import LETTERS, QUESTION_FIELDS, QUESTION_PREFILL, parse_question, question_key


logger = logging.getLogger(__name__)

GENERATIONS_FILE = "generations.jsonl"
SETTINGS_FILE = "generation_settings.json"
KEEP_REJECTED = 2  # invalid outputs kept per misconception (as examples for prompt work), never as rows
# Synthetic questions get ids far above the competition's (at most a few thousand), so the two never collide.
SYNTHETIC_ID_OFFSET = 1_000_000
DESCRIPTION_ID_OFFSET = 2_000_000  # description rows (`description_pairs`), apart from synthetic questions

QUESTION_SYSTEM_PROMPT = (
    "You are an experienced maths teacher who writes diagnostic multiple-choice questions. Given a misconception, "
    "write one new question with four answer options, exactly one correct, where one wrong option is the answer a "
    "student with that misconception would give. Reply with one JSON object with the keys "
    + ", ".join(QUESTION_FIELDS)
    + ". CorrectAnswer and MisconceptionAnswer are letters A-D and differ; the four options are different."
)
QUESTION_USER_TEMPLATE = "Misconception: {MisconceptionName}"


# ---------------------------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------------------------
def example_question(row: dict) -> dict:
    """A real pivoted Eedi row (question, one wrong answer with its misconception) as the JSON the model writes."""
    return {
        "ConstructName": row["ConstructName"],
        "SubjectName": row["SubjectName"],
        "QuestionText": row["QuestionText"],
        **{f"Answer{letter}Text": row[f"Answer{letter}Text"] for letter in LETTERS},
        "CorrectAnswer": row["CorrectAnswer"],
        "MisconceptionAnswer": row["Answer"],
    }


class FewShotPicker:
    """Real questions whose construct and misconception read most like a target misconception (TF-IDF cosine)."""

    def __init__(self, examples: pd.DataFrame):
        from sklearn.feature_extraction.text import TfidfVectorizer

        if examples.empty:
            raise InputError("no real labelled questions to draw few-shot examples from")
        self.examples = examples.reset_index(drop=True)
        texts = (self.examples["MisconceptionName"] + " " + self.examples["ConstructName"]).tolist()
        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(texts)
        self.matrix = self.vectorizer.transform(texts)

    def pick(self, misconception_name: str, k: int) -> list[dict]:
        """The `k` most similar real rows, one per question, most similar last (nearest the request)."""
        if k == 0:
            return []
        scores = (self.matrix @ self.vectorizer.transform([misconception_name]).T).toarray().ravel()
        chosen, questions = [], set()
        for i in np.argsort(-scores, kind="stable"):
            row = self.examples.iloc[int(i)]
            if row["QuestionId"] in questions:
                continue
            questions.add(row["QuestionId"])
            chosen.append(row.to_dict())
            if len(chosen) == k:
                break
        return chosen[::-1]


def few_shot_pool(labelled: pd.DataFrame, unlabelled: pd.DataFrame | None = None, fold: int = -1) -> pd.DataFrame:
    """Labelled pivoted rows with their question's four options (AnswerAText...), for few-shot examples.

    The options are put back together from the pivoted rows (the correct answer and each wrong one); questions
    with an option missing, and the held-out `fold`, are left out.
    """
    rows = pd.concat([labelled, unlabelled]) if unlabelled is not None else labelled
    options: dict[int, dict[str, str]] = {}
    for record in rows[["QuestionId", "CorrectAnswer", "CorrectAnswerText", "Answer", "AnswerText"]].itertuples():
        found = options.setdefault(int(record.QuestionId), {})
        found[record.CorrectAnswer] = record.CorrectAnswerText
        found[record.Answer] = record.AnswerText
    pool = labelled[[len(options[int(q)]) == len(LETTERS) for q in labelled["QuestionId"]]]
    if fold >= 0 and "fold" in pool.columns:
        pool = pool[pool["fold"] != fold]
    pool = pool.reset_index(drop=True)
    for letter in LETTERS:
        pool[f"Answer{letter}Text"] = [options[int(q)][letter] for q in pool["QuestionId"]]
    return pool


def question_conversation(misconception_name: str, examples: Iterable[dict], prefill: bool = True) -> Conversation:
    """System instruction, few-shot turns (a real misconception -> its real question as JSON), then the request."""
    messages = [{"role": "system", "content": QUESTION_SYSTEM_PROMPT}]
    for row in examples:
        messages.append({"role": "user", "content": QUESTION_USER_TEMPLATE.format(**row)})
        messages.append({"role": "assistant", "content": json.dumps(example_question(row), ensure_ascii=False)})
    messages.append({"role": "user", "content": QUESTION_USER_TEMPLATE.format(MisconceptionName=misconception_name)})
    if prefill:
        messages.append({"role": "assistant", "content": QUESTION_PREFILL})
    return messages


# ---------------------------------------------------------------------------------------------------------------
# Targets, the resumable store, and the generation loop
# ---------------------------------------------------------------------------------------------------------------
def target_misconceptions(
    real_pairs: pd.DataFrame, misconceptions: pd.DataFrame, settings: GenerationSettings
) -> pd.DataFrame:
    """Misconceptions to generate for: the given ids, or those with fewer than `min_examples` real rows (outside
    the held-out fold), in id order, at most `max_misconceptions`."""
    if settings.misconception_ids:
        unknown = sorted(set(settings.misconception_ids) - set(misconceptions["MisconceptionId"]))
        if unknown:
            raise InputError(f"misconception_ids {unknown[:5]} are not in the misconception mapping")
        targets = misconceptions[misconceptions["MisconceptionId"].isin(settings.misconception_ids)]
    else:
        rows = real_pairs if settings.fold < 0 else real_pairs[real_pairs["fold"] != settings.fold]
        counts = rows["MisconceptionId"].value_counts()
        have = misconceptions["MisconceptionId"].map(counts).fillna(0)
        targets = misconceptions[have < settings.min_examples]
    targets = targets.sort_values("MisconceptionId").reset_index(drop=True)
    return targets.head(settings.max_misconceptions) if settings.max_misconceptions else targets


class GenerationStore:
    """`generations.jsonl` in `output_dir`: one line per finished misconception, appended and flushed at once.

    A run killed mid-write leaves at most one partial last line; it is dropped (and cut off) when the store is
    opened again, so that misconception is simply generated again. The settings that shape the outputs are saved
    beside it; resuming with different ones is refused.
    """

    def __init__(self, output_dir: str | os.PathLike, identity: dict):
        self.folder = Path(output_dir)
        self.path = self.folder / GENERATIONS_FILE
        self.folder.mkdir(parents=True, exist_ok=True)
        settings_path = self.folder / SETTINGS_FILE
        if settings_path.is_file():
            saved = json.loads(settings_path.read_text())
            changed = {k: (saved.get(k), v) for k, v in identity.items() if saved.get(k) != v}
            if changed:
                raise InputError(
                    f"{self.folder} holds generations made with other settings {changed} (saved, now); "
                    "use a new output_dir or the saved settings"
                )
        else:
            settings_path.write_text(json.dumps(identity, indent=2) + "\n")
        self.records = read_jsonl(self.path, repair=True)

    @property
    def done(self) -> set[int]:
        return {int(r["MisconceptionId"]) for r in self.records}

    @property
    def known_questions(self) -> set[str]:
        return {question_key(q) for r in self.records for q in r["questions"]}

    def append(self, record: dict) -> None:
        append_jsonl(self.path, [record])
        self.records.append(record)


def generate_questions(
    backend,
    targets: pd.DataFrame,
    picker: FewShotPicker,
    store: GenerationStore,
    settings: GenerationSettings,
    progress: Callable | None = None,
) -> Counter:
    """Ask for `n_per_misconception` questions per target not yet in the store; validate, deduplicate, append.

    Returns the counts of this run: valid, duplicate, and each invalid reason.
    """
    from tqdm.auto import tqdm

    todo = targets[~targets["MisconceptionId"].isin(store.done)]
    if len(todo) < len(targets):
        logger.info("%d of %d misconceptions already done in %s", len(targets) - len(todo), len(targets), store.path)
    counts: Counter = Counter()
    seen_keys = store.known_questions
    per_call = max(1, settings.batch_size // settings.n_per_misconception)
    bar = (progress or tqdm)(total=len(todo), desc="misconceptions", unit="misc")
    for start in range(0, len(todo), per_call):
        chunk = todo.iloc[start : start + per_call]
        conversations = [
            question_conversation(name, picker.pick(name, settings.num_few_shot), settings.prefill)
            for name in chunk["MisconceptionName"]
        ]
        replies = backend.generate(conversations, settings.n_per_misconception)
        for (misconception_id, name), texts in zip(
            chunk[["MisconceptionId", "MisconceptionName"]].itertuples(index=False), replies, strict=True
        ):
            questions, reasons, rejected = [], Counter(), []
            for text in texts:
                question, reason = parse_question(text)
                if question is not None:
                    key = question_key(question)
                    if key in seen_keys:
                        reason = "duplicate"
                    else:
                        seen_keys.add(key)
                        questions.append(question)
                elif len(rejected) < KEEP_REJECTED:
                    rejected.append({"reason": reason, "text": text[:2000]})
                reasons[reason] += 1
            store.append(
                {
                    "MisconceptionId": int(misconception_id),
                    "MisconceptionName": name,
                    "questions": questions,
                    "counts": dict(reasons),
                    "rejected": rejected,
                }
            )
            counts.update(reasons)
            bar.update(1)
            bar.set_postfix(valid=counts["valid"], invalid=sum(counts.values()) - counts["valid"])
    bar.close()
    return counts


def summarize(store: GenerationStore) -> dict:
    """Counts over every misconception in the store (this run and earlier ones): valid share, reasons."""
    counts: Counter = Counter()
    for record in store.records:
        counts.update(record["counts"])
    total = sum(counts.values())
    return {
        "misconceptions": len(store.records),
        "generations": total,
        "valid": counts["valid"],
        "valid_share": counts["valid"] / total if total else 0.0,
        "questions": sum(len(r["questions"]) for r in store.records),
        "reasons": dict(sorted(counts.items())),
    }


# ---------------------------------------------------------------------------------------------------------------
# Synthetic rows in the Eedi schema
# ---------------------------------------------------------------------------------------------------------------
def read_generations(path: str | os.PathLike) -> list[dict]:
    """The records of a generations folder (or its generations.jsonl), a partial last line dropped."""
    path = Path(path)
    file = path / GENERATIONS_FILE if path.is_dir() else path
    if not file.is_file():
        raise InputError(f"{path}: no {GENERATIONS_FILE}; write it with scripts/generate_synthetic.py")
    return read_jsonl(file)


def synthetic_questions(records: list[dict]) -> pd.DataFrame:
    """Generations -> wide questions in the competition's train.csv layout (the misconception on the wrong answer).

    QuestionIds start at SYNTHETIC_ID_OFFSET; ConstructId and SubjectId are unknown (-1).
    """
    rows = []
    for record in records:
        for question in record["questions"]:
            row = {
                "QuestionId": SYNTHETIC_ID_OFFSET + len(rows),
                "ConstructId": -1,
                "ConstructName": question["ConstructName"],
                "SubjectId": -1,
                "SubjectName": question["SubjectName"],
                "CorrectAnswer": question["CorrectAnswer"],
                "QuestionText": question["QuestionText"],
                **{f"Answer{letter}Text": question[f"Answer{letter}Text"] for letter in LETTERS},
                **{f"Misconception{letter}Id": pd.NA for letter in LETTERS},
            }
            row[f"Misconception{question['MisconceptionAnswer']}Id"] = int(record["MisconceptionId"])
            rows.append(row)
    frame = pd.DataFrame(rows)
    for letter in LETTERS:
        if not frame.empty:
            frame[f"Misconception{letter}Id"] = frame[f"Misconception{letter}Id"].astype("Int64")
    return frame


def synthetic_dataset(questions: pd.DataFrame, misconceptions: pd.DataFrame, source: str = "synthetic"):
    """Wide synthetic questions -> DatasetDict(train=labelled pairs in the Eedi pairs schema plus `source`, fold
    -1 (training only); misconceptions=the mapping), ready for `extra_datasets`."""
    if questions.empty:
        raise InputError("no valid synthetic questions to build a dataset from")
    pairs = pivot_wrong_answers(questions, misconceptions)
    return pairs_dataset(pairs[pairs["MisconceptionId"].notna()], misconceptions, source)


def description_pairs(misconceptions: pd.DataFrame, skip_ids: set[int] = frozenset()) -> pd.DataFrame:
    """One labelled pair per misconception (those not in `skip_ids`) whose question is its own description, with no
    answers, construct or subject: the descriptions as training signal for misconceptions without questions.

    QuestionIds are DESCRIPTION_ID_OFFSET + MisconceptionId; ConstructId and SubjectId are unknown (-1).
    """
    kept = misconceptions[~misconceptions["MisconceptionId"].isin(skip_ids)].reset_index(drop=True)
    if kept.empty:
        raise InputError("every misconception is skipped: no description rows to build")
    ids = kept["MisconceptionId"].astype("int64")
    question_ids = DESCRIPTION_ID_OFFSET + ids
    return pd.DataFrame(
        {
            "QuestionId_Answer": [f"{q}_" for q in question_ids],
            "QuestionId": question_ids,
            "Answer": "",
            "ConstructId": -1,
            "ConstructName": "",
            "SubjectId": -1,
            "SubjectName": "",
            "CorrectAnswer": "",
            "QuestionText": kept["MisconceptionName"],
            "CorrectAnswerText": "",
            "AnswerText": "",
            "MisconceptionId": ids,
            "MisconceptionName": kept["MisconceptionName"],
        }
    )


def pairs_dataset(pairs: pd.DataFrame, misconceptions: pd.DataFrame, source: str):
    """Labelled pairs -> DatasetDict(train=the pairs in the Eedi pairs schema plus `source`, fold -1 (training
    only); misconceptions=the mapping), the layout `extra_datasets` reads."""
    from datasets import Dataset, DatasetDict, Features, Value

    pairs = pairs.reset_index(drop=True)
    pairs["fold"] = -1
    pairs["source"] = source
    features = Features({**PAIR_FEATURES, "source": Value("string")})
    train = Dataset.from_pandas(pairs[list(features)], features=features, preserve_index=False)
    return DatasetDict(
        {"train": train, MISCONCEPTIONS_SPLIT: Dataset.from_pandas(misconceptions, preserve_index=False)}
    )
