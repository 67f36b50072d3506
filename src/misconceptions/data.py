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
"""Reading and validating competition CSVs, building canonical MAP datasets, and loading any dataset by id or path."""

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset, DatasetDict, load_dataset, load_from_disk
from sklearn.model_selection import train_test_split

from .errors import InputError
from .sources import hub_lookup_errors, is_hub_id, not_found, split_revision


logger = logging.getLogger(__name__)

MAP_KAGGLE_HINT = "kaggle competitions download -c map-charting-student-math-misunderstandings"
MAP_INPUT_COLUMNS = ["row_id", "QuestionId", "QuestionText", "MC_Answer", "StudentExplanation"]
MAP_LABEL_COLUMNS = ["Category", "Misconception"]
MAP_CATEGORIES = [f"{p}_{c}" for p in ("True", "False") for c in ("Correct", "Misconception", "Neither")]

# The MAP reference solution's prompt (README: "Where the recipes come from"), verbatim.
MAP_PROMPT_TEMPLATE = """Analyze the student's reasoning for the following math problem.

### Question:
{QuestionText}

### Student's Answer Choice:
{MC_Answer}

### Student's Explanation:
{StudentExplanation}

### Analysis:"""


def read_csv_checked(path: str | os.PathLike, required: list[str], hint: str | None = None) -> pd.DataFrame:
    """Read a CSV as strings (the literal `NA` stays a label), failing clearly on a missing file, no rows or columns."""
    path = Path(path)
    if not path.is_file():
        where = f"{path}: file not found"
        raise InputError(f"{where}. Get the competition data with: {hint}" if hint else where)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file is empty; expected a header with columns {required}") from None
    except pd.errors.ParserError as err:
        raise InputError(f"{path}: not a valid CSV ({err})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    if len(df) == 0:
        raise InputError(f"{path}: the file has a header but no rows")
    return df


def _rows_where(df: pd.DataFrame, mask: pd.Series, limit: int = 5) -> str:
    """Describe offending rows by CSV line (header is line 1) and row_id, for error messages."""
    idx = np.flatnonzero(mask.to_numpy())
    shown = ", ".join(f"line {i + 2} (row_id {df['row_id'].iloc[i]})" for i in idx[:limit])
    more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
    return shown + more


def read_map_csv(path: str | os.PathLike, require_labels: bool, allow_empty_explanation: bool = False) -> pd.DataFrame:
    """Read and validate a MAP CSV (train layout when `require_labels`, else the test layout).

    Adds `label` (`Category:Misconception`) when the label columns are present.
    """
    required = MAP_INPUT_COLUMNS + (MAP_LABEL_COLUMNS if require_labels else [])
    df = read_csv_checked(path, required, hint=MAP_KAGGLE_HINT)
    for column in ("row_id", "QuestionId", "MC_Answer"):
        empty = df[column].str.strip() == ""
        if empty.any():
            raise InputError(f"{path}: empty '{column}' at {_rows_where(df, empty)}")
    blank = df["StudentExplanation"].str.strip().isin(["", "nan", "NaN"])
    if blank.any():
        message = f"{path}: empty or NaN 'StudentExplanation' at {_rows_where(df, blank)}"
        if not allow_empty_explanation:
            raise InputError(message + "; every training row needs the student's explanation")
        logger.warning("%s; predicting from the question and answer alone for those rows", message)
    has_labels = all(c in df.columns for c in MAP_LABEL_COLUMNS)
    if has_labels:
        unknown = ~df["Category"].isin(MAP_CATEGORIES)
        if unknown.any():
            bad = sorted(df.loc[unknown, "Category"].unique())[:5]
            raise InputError(
                f"{path}: unknown 'Category' {bad} at {_rows_where(df, unknown)}; expected one of {MAP_CATEGORIES}"
            )
        empty = df["Misconception"].str.strip() == ""
        if empty.any():
            raise InputError(f"{path}: empty 'Misconception' at {_rows_where(df, empty)} (use NA for none)")
        df["label"] = df["Category"] + ":" + df["Misconception"]
    return df


def map_prompt(df: pd.DataFrame, template: str = MAP_PROMPT_TEMPLATE) -> pd.Series:
    """Format each row with `template` (a str.format template over the CSV's columns)."""
    try:
        return pd.Series([template.format(**row) for row in df.to_dict("records")], index=df.index, dtype=object)
    except KeyError as err:
        raise InputError(f"text template uses column {err} that the data lacks; columns: {list(df.columns)}") from None


def stratified_split(labels: pd.Series, validation_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified train/validation split; classes with a single member go to train (the MAP reference solution's rule)."""
    if not 0 < validation_size < 1:
        raise InputError(f"--validation_size must be between 0 and 1, got {validation_size}")
    counts = labels.value_counts()
    single = labels.isin(counts[counts < 2].index).to_numpy()
    positions = np.arange(len(labels))
    train_idx, val_idx = train_test_split(
        positions[~single], test_size=validation_size, random_state=seed, stratify=labels.to_numpy()[~single]
    )
    return np.sort(np.concatenate([train_idx, positions[single]])), np.sort(val_idx)


def build_map_dataset(
    train_csv: str | os.PathLike,
    test_csv: str | os.PathLike | None = None,
    validation_size: float = 0.2,
    seed: int = 42,
) -> DatasetDict:
    """Validated MAP rows -> DatasetDict(train, validation[, test]) with a `label` ClassLabel and the MAP reference prompt."""
    df = read_map_csv(train_csv, require_labels=True)
    df["prompt"] = map_prompt(df)
    label_names = sorted(df["label"].unique())
    train_idx, val_idx = stratified_split(df["label"], validation_size, seed)
    features = None
    splits = {}
    for name, idx in (("train", train_idx), ("validation", val_idx)):
        part = Dataset.from_pandas(df.iloc[idx].reset_index(drop=True), preserve_index=False)
        part = part.cast_column("label", ClassLabel(names=label_names))
        features = part.features
        splits[name] = part
    if test_csv is not None:
        test_df = read_map_csv(test_csv, require_labels=False, allow_empty_explanation=True)
        test_df["prompt"] = map_prompt(test_df)
        splits["test"] = Dataset.from_pandas(test_df[MAP_INPUT_COLUMNS + ["prompt"]], preserve_index=False)
    logger.info("MAP dataset: %s, %d labels", {k: len(v) for k, v in splits.items()}, len(features["label"].names))
    return DatasetDict(splits)


def load_dataset_any(name_or_path: str, kind: str = "dataset", expected: str = "", **kwargs) -> DatasetDict:
    """Load a dataset saved with `save_to_disk` (a local folder) or from the Hub by repo id (`@REVISION` optional),
    the same way; InputError in one line when it is neither (sources.not_found)."""
    if os.path.isdir(name_or_path):
        try:
            return load_from_disk(name_or_path)
        except FileNotFoundError as err:
            raise InputError(
                f"{kind} '{name_or_path}' is a folder but not a dataset saved with save_to_disk ({err})"
            ) from None
    repo_id, revision = split_revision(name_or_path)  # ORG/NAME@REVISION
    if not is_hub_id(repo_id):
        raise not_found(kind, name_or_path, expected=expected)
    try:
        return load_dataset(repo_id, revision=revision, **kwargs)
    except hub_lookup_errors() as err:
        raise not_found(kind, name_or_path, err, expected=expected) from None


def map_frame(split: Dataset) -> pd.DataFrame:
    """A MAP dataset split as a DataFrame of strings, with `label` as its `Category:Misconception` name."""
    if "label" in split.column_names and not isinstance(split.features["label"], ClassLabel):
        raise InputError(
            f"'label' must be a ClassLabel of Category:Misconception names, got {split.features['label']}"
        )
    df = split.to_pandas()
    if "label" in df.columns:
        df["label"] = [split.features["label"].int2str(int(i)) for i in df["label"]]
    for column in MAP_INPUT_COLUMNS:
        if column not in df.columns:
            raise InputError(f"dataset split lacks column '{column}'; build it with data_builders/build_map.py")
        df[column] = df[column].astype(str)
    return df
