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
"""Eedi data: the pivot, folds, query text, the saved layout, and every bad input failing clearly with nothing written."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest
from datasets import load_from_disk

from misconceptions import (
    InputError,
    format_query,
    load_eedi_dataset,
    pivot_wrong_answers,
    read_questions_csv,
)
from misconceptions.eedi import assign_folds

from .conftest import DATA, REPO, run_script


EEDI = DATA / "eedi"


def write_small_eedi(folder: Path, n_questions: int = 16, n_other: int = 80) -> tuple[Path, Path]:
    """Real rows: the first `n_questions` questions with 2+ labelled wrong answers, and a mapping of the ids they use
    plus `n_other` other real misconceptions (ids kept, so they are not 0..n-1)."""
    if not (EEDI / "train.csv").is_file():
        pytest.skip(f"{EEDI}/train.csv not found (set MISCONCEPTIONS_DATA)")
    train = pd.read_csv(EEDI / "train.csv", dtype=str, keep_default_na=False)
    labels = [f"Misconception{x}Id" for x in "ABCD"]
    labelled = (train[labels] != "").sum(axis=1)
    small = train[labelled >= 2].head(n_questions)
    mapping = pd.read_csv(EEDI / "misconception_mapping.csv", dtype=str, keep_default_na=False)
    used = {str(int(float(v))) for v in small[labels].to_numpy().ravel() if v}
    other = mapping[~mapping["MisconceptionId"].isin(used)].sample(n_other, random_state=0)
    folder.mkdir(parents=True, exist_ok=True)
    small.to_csv(folder / "train.csv", index=False)
    pd.concat([mapping[mapping["MisconceptionId"].isin(used)], other]).to_csv(
        folder / "misconception_mapping.csv", index=False
    )
    return folder / "train.csv", folder / "misconception_mapping.csv"


@pytest.fixture(scope="module")
def small_csvs(tmp_path_factory):
    return write_small_eedi(tmp_path_factory.mktemp("eedi_csv"))


def _load_builder():
    spec = importlib.util.spec_from_file_location("build_eedi", REPO / "data_builders" / "build_eedi.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pivot_one_row_per_wrong_answer_with_int_ids(small_csvs):
    train_csv, mapping_csv = small_csvs
    raw = pd.read_csv(train_csv, dtype=str, keep_default_na=False)
    assert raw["MisconceptionAId"].str.contains(r"\.0$").any() or raw["MisconceptionBId"].str.contains(r"\.0$").any()
    mapping = pd.read_csv(mapping_csv)
    questions = read_questions_csv(train_csv, set(mapping["MisconceptionId"]), require_labels=True)
    pairs = pivot_wrong_answers(questions, mapping.astype({"MisconceptionId": "int64"}))
    assert len(pairs) == 3 * len(raw)  # three wrong answers per question
    first = raw.iloc[0]
    rows = pairs[pairs["QuestionId"] == int(first["QuestionId"])]
    assert first["CorrectAnswer"] not in set(rows["Answer"])
    assert (rows["CorrectAnswerText"] == first[f"Answer{first['CorrectAnswer']}Text"]).all()
    for _, row in rows.iterrows():
        cell = first[f"Misconception{row['Answer']}Id"]
        assert row["AnswerText"] == first[f"Answer{row['Answer']}Text"]
        assert row["QuestionId_Answer"] == f"{first['QuestionId']}_{row['Answer']}"
        if cell:
            assert row["MisconceptionId"] == int(float(cell))
            assert (
                row["MisconceptionName"]
                == mapping.set_index("MisconceptionId").loc[int(float(cell)), "MisconceptionName"]
            )
        else:
            assert pd.isna(row["MisconceptionId"])


def test_query_follows_the_seed_structure():
    row = {
        "QuestionText": "What is 2+3?",
        "CorrectAnswerText": "5",
        "AnswerText": "6",
        "ConstructName": "Add integers",
        "SubjectName": "Addition",
    }
    assert format_query(row) == (
        "<Question> What is 2+3?\n<Correct Answer> 5\n<Incorrect Answer> 6\n<Construct> Add integers\n"
        "<Subject> Addition"
    )
    assert format_query(row | {"LLMOutput": "adds one too many"}).endswith("\n<LLMOutput> adds one too many")
    from misconceptions import EEDI_QUERY_PROMPT  # here: configs imports TRL, which .venv-vllm (test_vllm) lacks

    assert EEDI_QUERY_PROMPT == (
        "Instruct: Given a math problem statement and an incorrect answer as a query, retrieve relevant passages "
        "that identify and explain the nature of the error.\nQuery: "
    )


def test_folds_are_grouped_balanced_and_seeded():
    groups = pd.Series([1, 1, 1, 2, 3, 3, 4, 5, 5, 5, 6, 7])
    folds = assign_folds(groups, n_folds=2, seed=0)
    for group in groups.unique():
        assert len(set(folds[groups == group])) == 1
    assert abs((folds == 0).sum() - (folds == 1).sum()) <= 1
    assert list(folds) == list(assign_folds(groups, n_folds=2, seed=0))
    assert any(list(assign_folds(groups, 2, seed=s)) != list(folds) for s in range(1, 6))
    with pytest.raises(InputError, match="cannot make 9 folds from 7 groups"):
        assign_folds(groups, n_folds=9, seed=0)


def test_build_eedi_writes_dataset_and_fold_csvs(small_csvs, tmp_path):
    train_csv, mapping_csv = small_csvs
    out = tmp_path / "eedi"
    run_script(
        "data_builders/build_eedi.py",
        "--train_csv",
        str(train_csv),
        "--misconceptions_csv",
        str(mapping_csv),
        "--output_dir",
        str(out),
        "--fold_by",
        "ConstructId",
    )
    ds = load_from_disk(str(out))
    assert set(ds) == {"train", "unlabelled", "misconceptions"}
    train = ds["train"].to_pandas()
    raw = pd.read_csv(train_csv, dtype=str, keep_default_na=False)
    n_labelled = int((raw[[f"Misconception{x}Id" for x in "ABCD"]] != "").to_numpy().sum())
    assert len(train) == n_labelled and ds["unlabelled"].num_rows == 3 * len(raw) - n_labelled
    assert ds["unlabelled"].to_pandas()["MisconceptionId"].isna().all()
    assert train["MisconceptionId"].dtype == "int64" and set(train["fold"]) == {0, 1}
    assert train.groupby("ConstructId")["fold"].nunique().max() == 1  # grouped by the chosen column
    assert "query" not in train.columns  # formatted where used (format_query / a recipe's query_template)
    assert ds["misconceptions"].num_rows == len(pd.read_csv(mapping_csv))
    # Each fold's questions in the competition layout, for retrieve.py; together they are the input.
    folds = [pd.read_csv(out / f"fold{k}.csv", dtype=str, keep_default_na=False) for k in (0, 1)]
    assert sorted(pd.concat(folds)["QuestionId"], key=int) == sorted(raw["QuestionId"], key=int)
    assert set(folds[0]["ConstructId"]).isdisjoint(folds[1]["ConstructId"])
    pairs, misconceptions = load_eedi_dataset(str(out))
    assert set(pairs) == {"train", "unlabelled"} and list(misconceptions.columns) == [
        "MisconceptionId",
        "MisconceptionName",
    ]


@pytest.fixture
def broken(small_csvs, tmp_path):
    """Write a modified copy of the small train.csv (or mapping) and return its path."""

    def make(modify, which: str = "train") -> Path:
        source = small_csvs[0] if which == "train" else small_csvs[1]
        df = modify(pd.read_csv(source, dtype=str, keep_default_na=False))
        path = tmp_path / f"broken_{which}.csv"
        df.to_csv(path, index=False)
        return path

    return make


def _build_fails(capsys, tmp_path, train_csv, mapping_csv, *needles: str) -> None:
    """In-process (fast): status 2, one clear line naming the problem, and nothing written."""
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        _load_builder().main(
            ["--train_csv", str(train_csv), "--misconceptions_csv", str(mapping_csv), "--output_dir", str(out)]
        )
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*")), "nothing half-written"


def test_missing_column(small_csvs, broken, capsys, tmp_path):
    path = broken(lambda df: df.drop(columns=["CorrectAnswer"]))
    _build_fails(capsys, tmp_path, path, small_csvs[1], "broken_train.csv", "missing column(s) ['CorrectAnswer']")
    path = broken(lambda df: df.drop(columns=["MisconceptionName"]), which="mapping")
    _build_fails(
        capsys, tmp_path, small_csvs[0], path, "broken_mapping.csv", "missing column(s) ['MisconceptionName']"
    )


def test_misconception_id_absent_from_mapping(small_csvs, broken, capsys, tmp_path):
    def bad(df):
        row = 4
        wrong = next(x for x in "ABCD" if x != df.loc[row, "CorrectAnswer"])
        df.loc[row, f"Misconception{wrong}Id"] = "99999.0"
        return df

    path = broken(bad)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    wrong = next(x for x in "ABCD" if x != df.loc[4, "CorrectAnswer"])
    _build_fails(
        capsys,
        tmp_path,
        path,
        small_csvs[1],
        "broken_train.csv",
        f"column 'Misconception{wrong}Id'",
        "[99999]",
        "not in the misconception mapping",
        f"row 5 (QuestionId {df.loc[4, 'QuestionId']})",
    )


def test_correct_answer_not_a_to_d(small_csvs, broken, capsys, tmp_path):
    def bad(df):
        df.loc[2, "CorrectAnswer"] = "E"
        return df

    path = broken(bad)
    qid = pd.read_csv(path, dtype=str)["QuestionId"].iloc[2]
    _build_fails(
        capsys,
        tmp_path,
        path,
        small_csvs[1],
        "'CorrectAnswer' must be one of A, B, C, D",
        "['E']",
        f"row 3 (QuestionId {qid})",
    )


def test_non_integer_id_and_label_on_correct_answer(small_csvs, broken, capsys, tmp_path):
    def fractional(df):
        df.loc[0, "MisconceptionAId" if df.loc[0, "CorrectAnswer"] != "A" else "MisconceptionBId"] = "12.5"
        return df

    _build_fails(capsys, tmp_path, broken(fractional), small_csvs[1], "must hold integer ids", "['12.5']", "row 1")

    known = pd.read_csv(small_csvs[1])["MisconceptionId"].iloc[0]

    def on_correct(df):
        letter = df.loc[1, "CorrectAnswer"]
        df.loc[1, f"Misconception{letter}Id"] = f"{known}.0"
        return df

    _build_fails(capsys, tmp_path, broken(on_correct), small_csvs[1], "labels the correct answer", "row 2")


def test_empty_files_and_bad_fold_settings(small_csvs, capsys, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    _build_fails(capsys, tmp_path, empty, small_csvs[1], "empty.csv: the file is empty")
    _build_fails(capsys, tmp_path, small_csvs[0], empty, "empty.csv: the file is empty")
    header = tmp_path / "header.csv"
    header.write_text(",".join(pd.read_csv(small_csvs[0], nrows=0).columns) + "\n")
    _build_fails(capsys, tmp_path, header, small_csvs[1], "header.csv: the file has a header but no rows")
    _build_fails(capsys, tmp_path, tmp_path / "nope.csv", small_csvs[1], "nope.csv: file not found", "kaggle")


def test_cli_exit_code_and_existing_output(small_csvs, tmp_path):
    """The real command line: status 2, no traceback; an existing output_dir is never overwritten."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("finished work")
    proc = run_script(
        "data_builders/build_eedi.py",
        "--train_csv",
        str(small_csvs[0]),
        "--misconceptions_csv",
        str(small_csvs[1]),
        "--output_dir",
        str(out),
        check=False,
    )
    assert proc.returncode == 2 and "already exists" in proc.stderr and "Traceback" not in proc.stderr
    assert (out / "keep.txt").read_text() == "finished work"
