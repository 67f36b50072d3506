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
"""Shared fixtures: small real MAP data (a few questions of ../shared/data/map/train.csv) built once per session."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest


REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MISCONCEPTIONS_DATA", REPO.parent / "shared" / "data"))
MAP_TRAIN = DATA / "map" / "train.csv"


def run_script(*args: str, cwd: Path = REPO, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Run a repo script in a subprocess, offline, and return the completed process (output captured)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_DISABLED": "true"}
    proc = subprocess.run(
        [sys.executable, *args], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def map_train_df() -> pd.DataFrame:
    if not MAP_TRAIN.is_file():
        pytest.skip(f"{MAP_TRAIN} not found (set MISCONCEPTIONS_DATA)")
    return pd.read_csv(MAP_TRAIN, dtype=str, keep_default_na=False)


@pytest.fixture(scope="session")
def small_map_csv(map_train_df, tmp_path_factory) -> Path:
    """About 120 real rows from three questions, every label of theirs kept at least twice where it can be."""
    questions = ["31772", "31774", "33471"]
    rows = map_train_df[map_train_df["QuestionId"].isin(questions)]
    sample = rows.groupby("QuestionId").sample(40, random_state=0)
    path = tmp_path_factory.mktemp("map_csv") / "train.csv"
    sample.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def small_map_dataset(small_map_csv, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("map_ds") / "map"
    run_script(
        "data_builders/build_map.py",
        "--train_csv",
        str(small_map_csv),
        "--output_dir",
        str(out),
        "--validation_size",
        "0.25",
    )
    return out
