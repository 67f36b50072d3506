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
"""The retriever -> reranker candidates: one row per wrong answer with its top misconceptions, and the submission.

`retrieve.py --candidates_out` saves them (`save_candidates`, a dataset folder or a Hub dataset): QuestionId_Answer,
QuestionId, Answer, query, MisconceptionId (none when unlabelled) and the lists candidate_ids / candidate_scores
(cosine) / candidate_names, best first. The retriever's second round reads them back as hard negatives
(`load_candidates`), the reranker as checked input (`read_candidates`, `attach_folds`, `extra_candidate_rows`); both
write the Kaggle submission (`submission_frame`). This module owns that format, so its writer and readers agree.
"""

import logging
import os

import numpy as np
import pandas as pd
from datasets import Dataset, Features, Sequence, Value

from .data import load_dataset_any
from .eedi import sample_by_weight
from .errors import InputError
from .io_utils import atomic_path
from .settings import RetrieverSettings


logger = logging.getLogger(__name__)

TOP_K = 25  # ids per wrong answer in a submission: the Eedi competition scores MAP@25
CANDIDATE_COLUMNS = ("QuestionId_Answer", "query", "candidate_ids", "candidate_scores")


def save_candidates(candidates: pd.DataFrame, path: str, retriever: RetrieverSettings | None = None) -> None:
    """Save a candidates frame as a dataset folder (atomically): the reranker's input and second-round negatives.

    `retriever`: the settings of the retriever that scored them, saved in the folder: the reranker blends these
    scores at the retriever's own loss scale (`retriever_settings`)."""
    features = Features(
        {
            "QuestionId_Answer": Value("string"),
            "QuestionId": Value("int64"),
            "Answer": Value("string"),
            "query": Value("string"),
            "MisconceptionId": Value("int64"),
            "candidate_ids": Sequence(Value("int64")),
            "candidate_scores": Sequence(Value("float32")),
            "candidate_names": Sequence(Value("string")),
        }
    )
    columns = list(features)
    data = {c: candidates[c].tolist() for c in columns}
    data["candidate_scores"] = [np.asarray(s, dtype=np.float32).tolist() for s in candidates["candidate_scores"]]
    data["MisconceptionId"] = [None if pd.isna(i) else int(i) for i in candidates["MisconceptionId"]]
    dataset = Dataset.from_dict(data, features=features)
    with atomic_path(path, is_dir=True) as tmp:
        dataset.save_to_disk(str(tmp))
        if retriever is not None:
            retriever.save(tmp)


def retriever_settings(path: str) -> RetrieverSettings:
    """The settings of the retriever that wrote the candidates at `path` (defaults when unknown: a Hub dataset or
    candidates saved by an earlier version)."""
    return RetrieverSettings.load(path) if os.path.isdir(path) else RetrieverSettings()


def load_candidates(path: str, required: tuple[str, ...] = ("QuestionId_Answer", "candidate_ids")) -> pd.DataFrame:
    """Candidates saved by retrieve.py --candidates_out (a folder or a Hub dataset), with the `required` columns."""
    candidates = load_dataset_any(path, kind="candidates")  # one line when neither a folder nor on the Hub
    if hasattr(candidates, "keys"):  # a DatasetDict: the candidates are its only (or "train") split
        candidates = candidates["train"] if "train" in candidates else next(iter(candidates.values()))
    frame = candidates.to_pandas()
    for column in required:
        if column not in frame.columns:
            raise InputError(
                f"{path}: candidates lack column '{column}'; write them with retrieve.py --candidates_out"
            )
    return frame


def read_candidates(path: str, names: dict[int, str] | None = None) -> pd.DataFrame:
    """Load candidates written by `retrieve.py --candidates_out` and check them; fill `candidate_names` from `names`.

    Every row needs a non-empty candidate list with one score per id; with `names` (the misconception mapping),
    every candidate id and every labelled MisconceptionId must be in it. Errors name the rows.
    """
    frame = load_candidates(path, required=CANDIDATE_COLUMNS)
    frame["candidate_ids"] = [[int(i) for i in ids] for ids in frame["candidate_ids"]]
    frame["candidate_scores"] = [np.asarray(s, dtype=np.float32) for s in frame["candidate_scores"]]
    empty = [key for key, ids in zip(frame["QuestionId_Answer"], frame["candidate_ids"], strict=True) if not ids]
    if empty:
        raise InputError(f"{path}: {len(empty)} rows have an empty candidate list (e.g. {', '.join(empty[:5])})")
    uneven = [
        key
        for key, ids, scores in zip(
            frame["QuestionId_Answer"], frame["candidate_ids"], frame["candidate_scores"], strict=True
        )
        if len(ids) != len(scores)
    ]
    if uneven:
        raise InputError(
            f"{path}: candidate_ids and candidate_scores differ in length in rows {', '.join(uneven[:5])}"
        )
    if names is not None:
        for key, ids in zip(frame["QuestionId_Answer"], frame["candidate_ids"], strict=True):
            unknown = [i for i in ids if i not in names]
            if unknown:
                raise InputError(
                    f"{path}: row {key} references misconception ids not in the mapping: {unknown[:5]} "
                    "(candidates and misconception_mapping.csv must come from the same data)"
                )
        if "MisconceptionId" in frame.columns:
            gold = frame["MisconceptionId"].dropna().astype(int)
            bad = frame.loc[gold.index[~gold.isin(list(names))], "QuestionId_Answer"].tolist()
            if bad:
                raise InputError(f"{path}: rows {', '.join(bad[:5])} are labelled with unknown misconception ids")
        frame["candidate_names"] = [[names[i] for i in ids] for ids in frame["candidate_ids"]]
    elif "candidate_names" not in frame.columns:
        raise InputError(f"{path}: candidates lack 'candidate_names'; give the misconception mapping too")
    else:
        frame["candidate_names"] = [list(n) for n in frame["candidate_names"]]
    return frame


def attach_folds(candidates: pd.DataFrame, pairs: pd.DataFrame, source: str) -> pd.DataFrame:
    """Join the dataset's labels and folds onto the candidates (by QuestionId_Answer).

    Unlabelled candidate rows (wrong answers without a misconception) are left out; a labelled row that the dataset
    does not have means the two come from different data, and fails.
    """
    keyed = pairs.set_index("QuestionId_Answer")
    present = candidates["QuestionId_Answer"].isin(keyed.index).to_numpy()
    labelled = candidates["MisconceptionId"].notna().to_numpy() if "MisconceptionId" in candidates else present
    stray = candidates.loc[~present & labelled, "QuestionId_Answer"].tolist()
    if stray:
        raise InputError(f"{source}: {len(stray)} labelled candidate rows are not in the dataset (e.g. {stray[:3]})")
    if not present.any():
        raise InputError(f"{source}: no candidate row matches the dataset's QuestionId_Answer keys")
    if (~present).any():
        logger.info("%d unlabelled candidate rows left out", int((~present).sum()))
    out = candidates[present].drop(columns=[c for c in ("MisconceptionId", "fold") if c in candidates.columns])
    out = out.reset_index(drop=True)
    out["MisconceptionId"] = keyed.loc[out["QuestionId_Answer"], "MisconceptionId"].astype(int).to_numpy()
    out["fold"] = keyed.loc[out["QuestionId_Answer"], "fold"].astype(int).to_numpy()
    return out


def extra_candidate_rows(mixture: list[dict], names: dict[int, str], seed: int) -> pd.DataFrame:
    """Labelled rows of other candidate sets (retrieve.py --candidates_out over e.g. synthetic questions), each
    sampled by its weight, for training only (fold -1, `source` = the path). `mixture`: the recipe's
    `extra_candidates`, `{path, weight}` mappings (`configs.parse_mixture`)."""
    frames = []
    for entry in mixture:
        path, weight = entry["path"], entry["weight"]
        frame = read_candidates(path, names)
        if "MisconceptionId" not in frame.columns or frame["MisconceptionId"].isna().all():
            raise InputError(f"{path}: no labelled rows; retrieve over a CSV with misconception ids to train on it")
        frame = frame[frame["MisconceptionId"].notna()].reset_index(drop=True)
        frame["MisconceptionId"] = frame["MisconceptionId"].astype(int)
        frame["fold"], frame["source"] = -1, path
        frames.append(sample_by_weight(frame, weight, seed))
        logger.info("Extra training rows: %d from %s (weight %s)", len(frames[-1]), path, weight)
    return pd.concat(frames, ignore_index=True)


def submission_frame(keys: list[str], ranked: np.ndarray, top_k: int = TOP_K) -> pd.DataFrame:
    """The Kaggle submission: QuestionId_Answer and the top ids, space-separated, best first."""
    return pd.DataFrame(
        {"QuestionId_Answer": keys, "MisconceptionId": [" ".join(str(int(i)) for i in row[:top_k]) for row in ranked]}
    )
