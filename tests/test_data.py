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

import pandas as pd
import pytest
from datasets import ClassLabel, load_from_disk

from misconceptions import MAP_PROMPT_TEMPLATE, InputError, read_map_csv, stratified_split

from .conftest import run_script


def test_build_map_writes_split_dataset(small_map_dataset, small_map_csv):
    ds = load_from_disk(str(small_map_dataset))
    source = pd.read_csv(small_map_csv, dtype=str, keep_default_na=False)
    assert set(ds) == {"train", "validation"}
    assert ds["train"].num_rows + ds["validation"].num_rows == len(source)
    assert isinstance(ds["train"].features["label"], ClassLabel)
    names = ds["train"].features["label"].names
    assert names == sorted({f"{c}:{m}" for c, m in zip(source.Category, source.Misconception, strict=True)})
    row = ds["train"][0]
    assert row["prompt"] == MAP_PROMPT_TEMPLATE.format(**row)
    assert row["prompt"].startswith("Analyze the student's reasoning") and row["prompt"].endswith("### Analysis:")
    # The competition-layout CSV of each split is written beside it, NA kept as a string.
    val_csv = pd.read_csv(small_map_dataset / "validation.csv", dtype=str, keep_default_na=False)
    assert len(val_csv) == ds["validation"].num_rows and "label" not in val_csv.columns
    assert set(ds["validation"]["row_id"]) == set(val_csv["row_id"])


def test_stratified_split_keeps_singletons_in_train():
    labels = pd.Series(["a"] * 10 + ["b"] * 10 + ["single"])
    train_idx, val_idx = stratified_split(labels, validation_size=0.2, seed=0)
    assert 20 in train_idx and 20 not in val_idx
    assert sorted(labels.iloc[val_idx]) == ["a", "a", "b", "b"]
    assert len(set(train_idx) | set(val_idx)) == len(labels)
    again, _ = stratified_split(labels, validation_size=0.2, seed=0)
    assert list(again) == list(train_idx)


def test_na_label_survives_reading(small_map_csv):
    df = read_map_csv(small_map_csv, require_labels=True)
    assert (df["Misconception"] == "NA").any() and df["label"].notna().all()


@pytest.fixture
def broken_csv(small_map_csv, tmp_path):
    """Write a modified copy of the small CSV and return its path."""

    def make(modify) -> str:
        df = pd.read_csv(small_map_csv, dtype=str, keep_default_na=False)
        df = modify(df)
        path = tmp_path / "broken.csv"
        df.to_csv(path, index=False)
        return str(path)

    return make


def _build_fails(csv_path: str, tmp_path, *needles: str) -> None:
    out = tmp_path / "out"
    proc = run_script("data_builders/build_map.py", "--train_csv", csv_path, "--output_dir", str(out), check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*")), "nothing half-written"


def test_missing_column(broken_csv, tmp_path):
    _build_fails(
        broken_csv(lambda df: df.drop(columns=["StudentExplanation"])),
        tmp_path,
        "broken.csv",
        "missing column(s) ['StudentExplanation']",
    )


def test_empty_explanation_names_the_row(broken_csv, tmp_path):
    def blank(df):
        df.loc[df.index[3], "StudentExplanation"] = "  "
        return df

    path = broken_csv(blank)
    row_id = pd.read_csv(path, dtype=str, keep_default_na=False)["row_id"].iloc[3]
    _build_fails(path, tmp_path, "broken.csv", "StudentExplanation", "line 5", f"row_id {row_id}")


def test_nan_explanation(broken_csv, tmp_path):
    def nan(df):
        df.loc[df.index[0], "StudentExplanation"] = float("nan")
        return df

    _build_fails(broken_csv(nan), tmp_path, "empty or NaN 'StudentExplanation'", "line 2")


def test_unknown_category(broken_csv, tmp_path):
    def bad(df):
        df.loc[df.index[7], "Category"] = "Maybe_Correct"
        return df

    _build_fails(broken_csv(bad), tmp_path, "unknown 'Category' ['Maybe_Correct']", "line 9", "True_Correct")


def test_nonexistent_path(tmp_path):
    _build_fails(str(tmp_path / "nope.csv"), tmp_path, "nope.csv: file not found", "kaggle competitions download")


def test_empty_csv(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    _build_fails(str(empty), tmp_path, "empty.csv: the file is empty")
    header_only = tmp_path / "header.csv"
    header_only.write_text("row_id,QuestionId,QuestionText,MC_Answer,StudentExplanation,Category,Misconception\n")
    _build_fails(str(header_only), tmp_path, "header.csv: the file has a header but no rows")


def test_existing_output_is_not_overwritten(small_map_csv, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("finished work")
    proc = run_script(
        "data_builders/build_map.py", "--train_csv", str(small_map_csv), "--output_dir", str(out), check=False
    )
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert (out / "keep.txt").read_text() == "finished work"


def test_prediction_input_allows_empty_explanation(small_map_csv, tmp_path):
    df = pd.read_csv(small_map_csv, dtype=str, keep_default_na=False).drop(columns=["Category", "Misconception"])
    df.loc[df.index[0], "StudentExplanation"] = ""
    path = tmp_path / "test.csv"
    df.to_csv(path, index=False)
    assert len(read_map_csv(path, require_labels=False, allow_empty_explanation=True)) == len(df)
    with pytest.raises(InputError, match="empty or NaN"):
        read_map_csv(path, require_labels=False)


def test_atomic_outputs_get_the_usual_permissions(tmp_path):
    """Files written through atomic_path are readable like any other output (mkstemp alone would leave 0600)."""
    import os
    import stat

    from misconceptions import atomic_path, write_json

    umask = os.umask(0o022)
    try:
        write_json(tmp_path / "metrics.json", {"map@3": 0.9})
        with atomic_path(tmp_path / "folder", is_dir=True) as tmp:
            (tmp / "a.txt").write_text("x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755
