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
"""Shared fixtures, built once per session: small real MAP and Eedi data (a few questions of ../shared/data), and
the tiny trained models that several test modules read without changing them."""

import contextlib
import importlib.util
import io
import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pandas as pd
import pytest


REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MISCONCEPTIONS_DATA", REPO.parent / "shared" / "data"))
MAP_TRAIN = DATA / "map" / "train.csv"
SCRIPT_ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_DISABLED": "true"}
os.environ.update(SCRIPT_ENV)  # the same environment for scripts run here and in subprocesses

_scripts: dict[Path, object] = {}


def _script_module(path: Path):
    """A repo script loaded once as a module (its `__main__` block not run), for calls to its `main(argv)`."""
    if path not in _scripts:
        spec = importlib.util.spec_from_file_location(f"script_{path.parent.name}_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _scripts[path] = module
    return _scripts[path]


def run_script(
    *args: str, cwd: Path = REPO, timeout: int = 600, check: bool = True, subprocess_: bool = False
) -> subprocess.CompletedProcess:
    """Run a repo script with `args` and return its exit code, stdout and stderr (as a CompletedProcess).

    By default the script's `main(argv)` runs in this process, with sys.argv, stdout, stderr and the log as the
    command line would have them: a subprocess would spend ~10 s importing torch and transformers each time. Pass
    `subprocess_=True` where the process boundary is what a test is about.
    """
    if subprocess_:
        proc = subprocess.run(
            [sys.executable, *args],
            check=False,
            cwd=cwd,
            env={**os.environ, **SCRIPT_ENV},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    else:
        proc = _run_in_process(args, cwd)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
        )
    return proc


def _run_in_process(args: tuple[str, ...], cwd: Path) -> subprocess.CompletedProcess:
    script, *argv = args
    module = _script_module((cwd / script).resolve())
    out, err = io.StringIO(), io.StringIO()
    root, library = logging.getLogger(), logging.getLogger("transformers")  # transformers logs to its own handler
    saved_handlers, saved_level = root.handlers[:], root.level
    library_handler = logging.StreamHandler(err)
    library.addHandler(library_handler)
    saved_argv, sys.argv = sys.argv, [script, *argv]
    code = 0
    try:
        with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                module.main(list(argv))
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            except Exception:  # noqa: BLE001 - what the interpreter would print before exiting 1
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved_argv
        library.removeHandler(library_handler)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


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


MAP_MINILM = REPO / "recipes" / "map" / "minilm-cpu.yaml"
MAP_TINY = [
    "--max_steps",
    "4",
    "--per_device_train_batch_size",
    "8",
    "--eval_strategy",
    "no",
    "--save_strategy",
    "no",
    "--load_best_model_at_end",
    "false",
    "--logging_steps",
    "1",
    "--max_length",
    "48",
    "--tfidf_weight",
    "0.5",
]


@pytest.fixture(scope="session")
def minilm_classifier(small_map_dataset, tmp_path_factory) -> Path:
    """A MiniLM classifier with the TF-IDF blend, 4 steps on real MAP rows, evaluated every 2 steps, logged to
    TensorBoard: read (never changed) by test_scripts, test_app and others."""
    out = tmp_path_factory.mktemp("runs") / "minilm"
    run_script(
        "scripts/train_classifier.py",
        "--config",
        str(MAP_MINILM),
        "--dataset_name",
        str(small_map_dataset),
        "--output_dir",
        str(out),
        *MAP_TINY,
        "--eval_strategy",
        "steps",
        "--eval_steps",
        "2",
        "--report_to",
        "tensorboard",
    )
    return out


EEDI_MINILM = REPO / "recipes" / "eedi" / "minilm-cpu.yaml"
POINTWISE = REPO / "recipes" / "eedi" / "reranker-minilm-cpu.yaml"
EEDI_TINY = [
    "--max_steps",
    "4",
    "--per_device_train_batch_size",
    "8",
    "--per_device_eval_batch_size",
    "64",
    "--eval_strategy",
    "steps",
    "--eval_steps",
    "2",
    "--save_strategy",
    "steps",
    "--save_steps",
    "2",
    "--logging_steps",
    "1",
    "--query_max_length",
    "64",
    "--document_max_length",
    "32",
    "--num_negatives",
    "1",
]


@pytest.fixture(scope="session")
def eedi_data(tmp_path_factory) -> dict:
    """A built dataset from 16 real questions (2 folds) and a 113-misconception mapping; also its source CSVs."""
    from .test_eedi_data import write_small_eedi

    folder = tmp_path_factory.mktemp("eedi")
    train_csv, mapping_csv = write_small_eedi(folder / "csv")
    out = folder / "eedi"
    run_script(
        "data_builders/build_eedi.py",
        "--train_csv",
        str(train_csv),
        "--misconceptions_csv",
        str(mapping_csv),
        "--output_dir",
        str(out),
    )
    return {"dataset": out, "train_csv": train_csv, "mapping_csv": out / "misconception_mapping.csv"}


@pytest.fixture(scope="session")
def eedi_minilm_run(eedi_data, tmp_path_factory) -> tuple[Path, str]:
    """The MiniLM retriever, 4 steps with an evaluation every 2, logged to TensorBoard -> (folder, its log)."""
    out = tmp_path_factory.mktemp("runs") / "eedi-minilm"
    proc = run_script(
        "scripts/train_retriever.py",
        "--config",
        str(EEDI_MINILM),
        "--dataset_name",
        str(eedi_data["dataset"]),
        "--output_dir",
        str(out),
        *EEDI_TINY,
        "--report_to",
        "tensorboard",
    )
    return out, proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def eedi(eedi_data, tmp_path_factory):
    """The small Eedi dataset of `eedi_data` and zero-shot MiniLM candidates (30) for every row of its CSV."""
    from misconceptions.model_utils import resolve_model_path

    folder = tmp_path_factory.mktemp("rerank")
    run_script(
        "scripts/retrieve.py",
        "--model",
        resolve_model_path("builtin:all-MiniLM-L6-v2"),
        "--input_csv",
        str(eedi_data["train_csv"]),
        "--misconceptions_csv",
        str(eedi_data["mapping_csv"]),
        "--output_csv",
        str(folder / "retrieved.csv"),
        "--candidates_out",
        str(folder / "candidates"),
        "--candidates_k",
        "30",
    )
    return {
        "dataset": eedi_data["dataset"],
        "candidates": folder / "candidates",
        "csv": eedi_data["train_csv"],
        "mapping": eedi_data["mapping_csv"],
        "retrieved": folder / "retrieved.csv",
    }


@pytest.fixture(scope="session")
def pointwise_run(eedi, tmp_path_factory):
    """A pointwise reranker, 3 steps, on candidates whose retriever was trained at loss scale 12.5 (its saved
    settings say so): the reranker must take that scale for its blend, with no option of its own."""
    import shutil

    from misconceptions.settings import RetrieverSettings

    candidates = tmp_path_factory.mktemp("candidates") / "scale-12.5"
    shutil.copytree(eedi["candidates"], candidates)
    RetrieverSettings(base_model="builtin:all-MiniLM-L6-v2", loss_scale=12.5).save(candidates)
    out = tmp_path_factory.mktemp("runs") / "pointwise"
    run_script(
        "scripts/train_reranker.py",
        "--config",
        str(POINTWISE),
        "--dataset_name",
        str(eedi["dataset"]),
        "--candidates",
        str(candidates),
        "--output_dir",
        str(out),
        "--model_name_or_path",
        "builtin:all-MiniLM-L6-v2",  # the recipe starts from a trained retriever; the packaged model stands in
        "--max_steps",
        "3",
        "--per_device_train_batch_size",
        "8",
        "--num_negatives",
        "3",
        "--logging_steps",
        "1",
    )
    return out
