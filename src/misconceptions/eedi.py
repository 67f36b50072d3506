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
"""Eedi data: validated question and misconception CSVs, the pivot to one row per wrong answer, query texts, folds.

The competition's `train.csv` is wide: one row per question with four answers (`AnswerAText`...) and, for the wrong
ones, a misconception id (`MisconceptionAId`..., written as floats such as `1672.0`, empty when unlabelled).
`pivot_wrong_answers` turns it into one row per (question, wrong answer); `build_eedi_dataset` adds a grouped `fold`
column. Query texts (the Eedi reference solution's `<Question> ... <Correct Answer> ... <Incorrect Answer> ...
<Construct> ... <Subject> ...` structure, or a recipe's `query_template`) are formatted from these columns where they
are used (`query_texts`), so the dataset stores none. The reference solution's instruction is applied as the model's
query prompt (`configs.EEDI_QUERY_PROMPT`), so any prompt can be tried on the same dataset.
"""

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset, DatasetDict, Features, Value

from .data import load_dataset_any, read_csv_checked
from .errors import InputError
from .explanations import attach_explanations


logger = logging.getLogger(__name__)

EEDI_KAGGLE_HINT = "kaggle competitions download -c eedi-mining-misconceptions-in-mathematics"
ANSWER_LETTERS = ("A", "B", "C", "D")
QUESTION_COLUMNS = [
    "QuestionId",
    "ConstructId",
    "ConstructName",
    "SubjectId",
    "SubjectName",
    "CorrectAnswer",
    "QuestionText",
    *[f"Answer{letter}Text" for letter in ANSWER_LETTERS],
]
LABEL_COLUMNS = [f"Misconception{letter}Id" for letter in ANSWER_LETTERS]
MISCONCEPTION_COLUMNS = ["MisconceptionId", "MisconceptionName"]
FOLD_BY = ("QuestionId", "ConstructId", "SubjectId")
MISCONCEPTIONS_SPLIT = "misconceptions"
MISCONCEPTIONS_CONFIG = "misconceptions"

# The Eedi reference solution's query structure; `<LLMOutput>` is appended only where a row has an explanation
# (`explanations.attach_explanations`).
QUERY_TEMPLATE = (
    "<Question> {QuestionText}\n<Correct Answer> {CorrectAnswerText}\n<Incorrect Answer> {AnswerText}\n"
    "<Construct> {ConstructName}\n<Subject> {SubjectName}"
)
LLM_OUTPUT_TEMPLATE = "\n<LLMOutput> {LLMOutput}"

PAIR_FEATURES = Features(
    {
        "QuestionId_Answer": Value("string"),
        "QuestionId": Value("int64"),
        "Answer": Value("string"),
        "ConstructId": Value("int64"),
        "ConstructName": Value("string"),
        "SubjectId": Value("int64"),
        "SubjectName": Value("string"),
        "CorrectAnswer": Value("string"),
        "QuestionText": Value("string"),
        "CorrectAnswerText": Value("string"),
        "AnswerText": Value("string"),
        "MisconceptionId": Value("int64"),
        "MisconceptionName": Value("string"),
        "fold": Value("int64"),
    }
)
# The pivoted rows' keys and the fields of the reference query: what `retrieve_candidates` needs from a dataset.
PIVOT_COLUMNS = (
    "QuestionId_Answer",
    "QuestionId",
    "Answer",
    "QuestionText",
    "CorrectAnswerText",
    "AnswerText",
    "ConstructName",
    "SubjectName",
)


def _where(df: pd.DataFrame, mask: np.ndarray, limit: int = 5) -> str:
    """Offending rows as 1-based data rows (the header is not counted) with their QuestionId, for error messages."""
    idx = np.flatnonzero(mask)
    has_id = "QuestionId" in df.columns
    shown = ", ".join(
        f"row {i + 1}" + (f" (QuestionId {df['QuestionId'].iloc[i]})" if has_id else "") for i in idx[:limit]
    )
    return shown + (f" and {len(idx) - limit} more" if len(idx) > limit else "")


def _integer_column(df: pd.DataFrame, column: str, path, allow_empty: bool = False) -> pd.Series:
    """Parse a column of integer ids written as `12` or `12.0` into a nullable Int64 Series, failing clearly."""
    text = df[column].str.strip()
    numbers = pd.to_numeric(text.where(text != "", None), errors="coerce")
    bad = (text != "") & (numbers.isna() | (numbers % 1 != 0))
    if bad.any():
        examples = sorted(set(df.loc[bad, column]))[:3]
        raise InputError(f"{path}: column '{column}' must hold integer ids, got {examples} at {_where(df, bad)}")
    empty = text == ""
    if empty.any() and not allow_empty:
        raise InputError(f"{path}: empty '{column}' at {_where(df, empty.to_numpy())}")
    return numbers.astype("Int64")


def read_misconceptions_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate `misconception_mapping.csv`: unique integer ids and non-empty names."""
    df = read_csv_checked(path, MISCONCEPTION_COLUMNS, hint=EEDI_KAGGLE_HINT)
    ids = _integer_column(df, "MisconceptionId", path)
    duplicated = ids.duplicated(keep=False).to_numpy()
    if duplicated.any():
        raise InputError(f"{path}: duplicate 'MisconceptionId' {sorted(set(ids[duplicated]))[:5]}")
    empty = (df["MisconceptionName"].str.strip() == "").to_numpy()
    if empty.any():
        raise InputError(f"{path}: empty 'MisconceptionName' at {_where(df, empty)}")
    frame = pd.DataFrame({"MisconceptionId": ids.astype("int64"), "MisconceptionName": df["MisconceptionName"]})
    return frame.sort_values("MisconceptionId", kind="stable").reset_index(drop=True)


def read_questions_csv(
    path: str | os.PathLike, misconception_ids: set[int] | None = None, require_labels: bool = False
) -> pd.DataFrame:
    """Read and validate a wide Eedi question CSV (`train.csv` layout, or `test.csv` without the label columns).

    Label columns, when present, become nullable integers; every id must be in `misconception_ids` (when given) and
    belong to a wrong answer.
    """
    df = read_csv_checked(path, QUESTION_COLUMNS + (LABEL_COLUMNS if require_labels else []), hint=EEDI_KAGGLE_HINT)
    df["QuestionId"] = _integer_column(df, "QuestionId", path)
    duplicated = df["QuestionId"].duplicated(keep=False).to_numpy()
    if duplicated.any():
        raise InputError(f"{path}: duplicate 'QuestionId' at {_where(df, duplicated)}")
    for column in ("ConstructId", "SubjectId"):
        df[column] = _integer_column(df, column, path)
    df["CorrectAnswer"] = df["CorrectAnswer"].str.strip()
    bad = ~df["CorrectAnswer"].isin(ANSWER_LETTERS).to_numpy()
    if bad.any():
        values = sorted(set(df.loc[bad, "CorrectAnswer"]))[:3]
        raise InputError(f"{path}: 'CorrectAnswer' must be one of A, B, C, D; got {values} at {_where(df, bad)}")
    present = [c for c in LABEL_COLUMNS if c in df.columns]
    if present and len(present) != len(LABEL_COLUMNS):
        missing = [c for c in LABEL_COLUMNS if c not in df.columns]
        raise InputError(f"{path}: has some misconception columns but lacks {missing}; give all four or none")
    for letter, column in zip(ANSWER_LETTERS, present, strict=False):
        ids = _integer_column(df, column, path, allow_empty=True)
        if misconception_ids is not None:
            unknown = (ids.notna() & ~ids.isin(misconception_ids)).to_numpy()
            if unknown.any():
                values = sorted({int(v) for v in ids[unknown]})[:5]
                raise InputError(
                    f"{path}: column '{column}' has misconception id(s) {values} that are not in the misconception "
                    f"mapping, at {_where(df, unknown)}"
                )
        on_correct = (ids.notna() & (df["CorrectAnswer"] == letter)).to_numpy()
        if on_correct.any():
            raise InputError(
                f"{path}: column '{column}' labels the correct answer {letter} with a misconception at "
                f"{_where(df, on_correct)}; only wrong answers have misconceptions"
            )
        df[column] = ids
    return df


def pivot_wrong_answers(questions: pd.DataFrame, misconceptions: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (question, wrong answer), in question order then A-D, with the correct answer's text beside it.

    `MisconceptionId` is a nullable Int64 (missing for unlabelled answers or when the CSV has no label columns).
    """
    has_labels = all(c in questions.columns for c in LABEL_COLUMNS)
    rows = []
    for record in questions.to_dict("records"):
        correct = record["CorrectAnswer"]
        for letter in ANSWER_LETTERS:
            if letter == correct:
                continue
            label = record[f"Misconception{letter}Id"] if has_labels else pd.NA
            rows.append(
                {
                    "QuestionId_Answer": f"{record['QuestionId']}_{letter}",
                    "QuestionId": record["QuestionId"],
                    "Answer": letter,
                    "ConstructId": record["ConstructId"],
                    "ConstructName": record["ConstructName"],
                    "SubjectId": record["SubjectId"],
                    "SubjectName": record["SubjectName"],
                    "CorrectAnswer": correct,
                    "QuestionText": record["QuestionText"],
                    "CorrectAnswerText": record[f"Answer{correct}Text"],
                    "AnswerText": record[f"Answer{letter}Text"],
                    "MisconceptionId": label,
                    **({"LLMOutput": record["LLMOutput"]} if "LLMOutput" in record else {}),
                }
            )
    long = pd.DataFrame(rows)
    if long.empty:
        return long
    long["MisconceptionId"] = long["MisconceptionId"].astype("Int64")
    if misconceptions is not None:
        names = dict(zip(misconceptions["MisconceptionId"], misconceptions["MisconceptionName"], strict=True))
        long["MisconceptionName"] = [None if pd.isna(i) else names.get(int(i)) for i in long["MisconceptionId"]]
    return long


def format_query(row: dict) -> str:
    """The Eedi reference solution's query text for one pivoted row (without the instruction: the model's prompt)."""
    text = QUERY_TEMPLATE.format(**row)
    llm_output = row.get("LLMOutput")
    if isinstance(llm_output, str) and llm_output.strip():
        text += LLM_OUTPUT_TEMPLATE.format(LLMOutput=llm_output)
    return text


def query_texts(pairs: pd.DataFrame, template: str | None = None) -> list[str]:
    """Query texts for pivoted rows: the reference structure (`format_query`), or `template` (str.format over columns)."""
    if not template:
        return [format_query(row) for row in pairs.to_dict("records")]
    try:
        return [template.format(**row) for row in pairs.to_dict("records")]
    except KeyError as err:
        raise InputError(
            f"query_template uses column {err} that the data lacks; columns: {list(pairs.columns)}"
        ) from None


def assign_folds(groups: pd.Series, n_folds: int, seed: int) -> np.ndarray:
    """Grouped fold ids: every row of a group shares a fold; groups are shuffled with `seed`, then dealt out
    greedily to the fold with the fewest rows so far (largest groups first), so folds have similar sizes."""
    unique = groups.unique()
    if n_folds < 2:
        raise InputError(f"--n_folds must be at least 2, got {n_folds}")
    if len(unique) < n_folds:
        raise InputError(f"cannot make {n_folds} folds from {len(unique)} groups")
    rng = np.random.default_rng(seed)
    sizes = groups.value_counts()
    order = rng.permutation(unique)
    order = sorted(order, key=lambda g: -sizes[g])  # stable: equal sizes keep the shuffled order
    fold_rows = np.zeros(n_folds, dtype=np.int64)
    group_fold = {}
    for group in order:
        fold = int(np.argmin(fold_rows))
        group_fold[group] = fold
        fold_rows[fold] += sizes[group]
    return groups.map(group_fold).to_numpy(dtype=np.int64)


def build_eedi_dataset(
    train_csv: str | os.PathLike,
    misconceptions_csv: str | os.PathLike,
    n_folds: int = 2,
    fold_by: str = "QuestionId",
    seed: int = 42,
    explanations: str | os.PathLike | None = None,
) -> tuple[DatasetDict, pd.DataFrame, pd.DataFrame]:
    """Validated CSVs -> (DatasetDict(train=labelled pairs, unlabelled=wrong answers without a label,
    misconceptions=id+name), the validated wide questions with their `fold`, the misconceptions frame).

    With `explanations` (a scripts/explain.py folder covering every wrong answer), each row gets its `LLMOutput`,
    which `format_query` ends the query with (the Eedi reference solution's `<LLMOutput>` field).
    """
    if fold_by not in FOLD_BY:
        raise InputError(f"--fold_by must be one of {', '.join(FOLD_BY)}, got '{fold_by}'")
    misconceptions = read_misconceptions_csv(misconceptions_csv)
    questions = read_questions_csv(
        train_csv, misconception_ids=set(misconceptions["MisconceptionId"]), require_labels=True
    )
    questions["fold"] = assign_folds(questions[fold_by], n_folds, seed)
    pairs = pivot_wrong_answers(questions, misconceptions)
    pairs["fold"] = pairs["QuestionId"].map(dict(zip(questions["QuestionId"], questions["fold"], strict=True)))
    features = PAIR_FEATURES
    if explanations is not None:
        pairs = attach_explanations(pairs, explanations)
        features = Features({**PAIR_FEATURES, "LLMOutput": Value("string")})
    labelled = pairs["MisconceptionId"].notna()
    if not labelled.any():
        raise InputError(f"{train_csv}: no wrong answer has a misconception id; nothing to train on")
    splits = {}
    for name, part in (("train", pairs[labelled]), ("unlabelled", pairs[~labelled])):
        part = part[list(features)].reset_index(drop=True)
        splits[name] = Dataset.from_pandas(part, features=features, preserve_index=False)
    splits[MISCONCEPTIONS_SPLIT] = Dataset.from_pandas(misconceptions, preserve_index=False)
    dataset = DatasetDict(splits)
    counts = np.bincount(splits["train"]["fold"], minlength=n_folds).tolist()
    logger.info("Eedi dataset: %s; labelled pairs per fold %s", dict(dataset.num_rows), counts)
    return dataset, questions, misconceptions


def load_eedi_dataset(name_or_path: str) -> tuple[DatasetDict, pd.DataFrame]:
    """A dataset written by data_builders/build_eedi.py, from disk or the Hub -> (pairs DatasetDict, misconceptions)."""
    if os.path.isdir(name_or_path) or name_or_path.startswith((".", "/")):
        dataset = load_dataset_any(name_or_path)
        if MISCONCEPTIONS_SPLIT not in dataset:
            raise InputError(
                f"{name_or_path}: no '{MISCONCEPTIONS_SPLIT}' split; build it with data_builders/build_eedi.py"
            )
        misconceptions = dataset[MISCONCEPTIONS_SPLIT].to_pandas()
        pairs = DatasetDict({k: v for k, v in dataset.items() if k != MISCONCEPTIONS_SPLIT})
    else:  # On the Hub the two tables are separate configs (their columns differ).
        expected = "a folder written by data_builders/build_eedi.py"
        pairs = load_dataset_any(name_or_path, expected=expected)
        misconceptions = load_dataset_any(
            name_or_path, expected=expected, name=MISCONCEPTIONS_CONFIG, split="train"
        ).to_pandas()
    for column in MISCONCEPTION_COLUMNS:
        if column not in misconceptions.columns:
            raise InputError(f"{name_or_path}: the misconceptions table lacks column '{column}'")
    return pairs, misconceptions.sort_values("MisconceptionId").reset_index(drop=True)


def dataset_rows(pairs: DatasetDict, fold: int | None = None, source: str = "the dataset") -> pd.DataFrame:
    """Every wrong answer of a built dataset (its `train` and `unlabelled` splits), or those of one `fold`, as
    `retrieve_candidates` takes them: in question order then A-D, the order `pivot_wrong_answers` gives a CSV whose
    questions are sorted by QuestionId (as the competition's train.csv and build_eedi.py's fold<k>.csv are), so the
    model sees the same rows in the same batches. `fold` None or -1: every fold."""
    frames = [pairs[name].to_pandas() for name in ("train", "unlabelled") if name in pairs]
    if not frames:
        raise InputError(
            f"{source}: no 'train' or 'unlabelled' split (has {list(pairs)}); build it with build_eedi.py"
        )
    rows = pd.concat(frames, ignore_index=True)
    missing = [c for c in (*PIVOT_COLUMNS, "MisconceptionId", "fold") if c not in rows.columns]
    if missing:
        raise InputError(f"{source}: lacks column(s) {missing}; build it with data_builders/build_eedi.py")
    if fold is not None and fold != -1:
        folds = sorted(int(f) for f in rows["fold"].unique())
        if fold not in folds:
            raise InputError(f"{source}: --fold {fold} is not one of its folds {folds} (or -1 for every fold)")
        rows = rows[rows["fold"] == fold]
    rows = rows.sort_values(["QuestionId", "Answer"], kind="stable").reset_index(drop=True)
    rows["MisconceptionId"] = rows["MisconceptionId"].astype("Int64")
    return rows


def eedi_hub_configs(dataset: DatasetDict) -> dict[str, DatasetDict]:
    """The Hub layout of a build_eedi.py dataset: the pairs as the default config, the misconceptions as another."""
    pairs = DatasetDict({k: v for k, v in dataset.items() if k != MISCONCEPTIONS_SPLIT})
    return {"default": pairs, MISCONCEPTIONS_CONFIG: DatasetDict({"train": dataset[MISCONCEPTIONS_SPLIT]})}


def seen_misconception_ids(train_df: pd.DataFrame) -> list[int]:
    """Misconceptions with real training rows (synthetic rows, `source` other than "real", do not count)."""
    real = train_df[train_df["source"] == "real"] if "source" in train_df.columns else train_df
    return sorted({int(i) for i in real["MisconceptionId"]})


def sample_by_weight(frame: pd.DataFrame, weight: float, seed: int) -> pd.DataFrame:
    """Rows of `frame` in proportion to `weight`: 1 keeps every row once, 2.5 every row twice plus a random half,
    0.3 a random 30%."""
    if weight < 0:
        raise InputError(f"dataset weights must be >= 0, got {weight}")
    whole, part = divmod(weight, 1.0)
    parts = [frame] * int(whole)
    n = round(part * len(frame))
    if n:
        rng = np.random.default_rng(seed)
        parts.append(frame.iloc[np.sort(rng.choice(len(frame), n, replace=False))])
    return pd.concat(parts, ignore_index=True) if parts else frame.iloc[:0]


def extra_training_rows(
    mixture: list[dict], misconception_ids: set[int], split: str = "train", seed: int = 42
) -> pd.DataFrame:
    """Labelled pairs from other Eedi datasets (e.g. data_builders/build_synthetic.py's), each sampled by its
    weight, for training only (fold -1); `source` kept from the dataset or set to its name. `mixture`: the
    recipe's `extra_datasets`, `{path, weight}` mappings (`configs.parse_mixture`)."""
    frames = []
    for entry in mixture:
        name, weight = entry["path"], entry["weight"]
        pairs, _ = load_eedi_dataset(name)
        if split not in pairs:
            raise InputError(f"{name}: no '{split}' split (has {list(pairs)})")
        frame = pairs[split].to_pandas()
        missing = [c for c in ("MisconceptionId", "MisconceptionName", *PIVOT_COLUMNS) if c not in frame]
        if missing:
            raise InputError(f"{name}: split '{split}' lacks columns {missing}; build it with data_builders/")
        unknown = sorted(set(frame["MisconceptionId"].astype(int)) - misconception_ids)
        if unknown:
            raise InputError(f"{name}: misconception ids {unknown[:5]} are not in the training dataset's mapping")
        frame["fold"] = -1
        if "source" not in frame.columns:
            frame["source"] = name
        frames.append(sample_by_weight(frame, weight, seed))
        logger.info("Extra training rows: %d from %s (weight %s)", len(frames[-1]), name, weight)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_wide_csv(questions: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write questions back in the competition's wide layout (ids as integers, empty cells for no label)."""
    columns = QUESTION_COLUMNS + [c for c in LABEL_COLUMNS if c in questions.columns]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    questions[columns].to_csv(path, index=False)
