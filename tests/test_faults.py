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
"""Faults the command-line tools must survive: a SIGKILL while the final output is moved into place, a write that
fails (a full disk, a read-only folder), and a dataset/model/candidates name that is neither a folder here nor on
the Hub. Each leaves either no output or the previous complete one, and says what went wrong in one line."""

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from datasets import load_from_disk

from misconceptions import OutputError, atomic_path
from misconceptions.io_utils import remove_stale_temporaries
from misconceptions.model_utils import resolve_model_path

from .conftest import MAP_MINILM, REPO, run_script


MINILM = "builtin:all-MiniLM-L6-v2"


# ---------------------------------------------------------------- atomic_path itself


def test_a_failed_write_keeps_the_previous_folder_and_leaves_no_temporary(tmp_path):
    out = tmp_path / "dataset"
    with atomic_path(out, is_dir=True) as tmp:
        (tmp / "data.txt").write_text("v1")
    with pytest.raises(RuntimeError), atomic_path(out, is_dir=True) as tmp:
        (tmp / "data.txt").write_text("half")
        raise RuntimeError("killed by the test")
    with atomic_path(out, is_dir=True) as tmp:  # the swap: the new folder in place, the old one gone
        (tmp / "data.txt").write_text("v2")
    assert (out / "data.txt").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


def test_temporaries_of_a_dead_process_are_removed_and_a_live_ones_kept(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    out = tmp_path / "out.csv"
    (tmp_path / f".out.csv.tmp-{dead_pid}-abc").write_text("half")
    (tmp_path / f".out.csv.old-{dead_pid}-abc").mkdir()
    (tmp_path / f".out.csv.tmp-{os.getpid()}-xyz").write_text("mine, still writing")
    (tmp_path / ".other.csv.tmp-1-abc").write_text("another output's")
    remove_stale_temporaries(out)
    assert {p.name for p in tmp_path.iterdir()} == {f".out.csv.tmp-{os.getpid()}-xyz", ".other.csv.tmp-1-abc"}


def test_a_write_error_names_the_output(tmp_path):
    out = tmp_path / "out.csv"
    with pytest.raises(OutputError, match=f"could not write {out}: No space left on device"), atomic_path(out) as tmp:
        tmp.write_text("x")
        raise OSError(28, "No space left on device")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError), atomic_path(out):  # not a write failure: passed through unchanged
        open(tmp_path / "missing-input.csv").close()


# ---------------------------------------------------------------- the five tools


def _digest(path: Path) -> str:
    """One hash of a file, or of every file (name and bytes) under a folder."""
    sha = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        sha.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        sha.update(file.read_bytes())
    return sha.hexdigest()


def run_in_process(script: str, argv: list[str]) -> tuple[int, str]:
    """Run a repo script's `main(argv)` in this process (conftest's `run_script`) -> (exit code, stderr)."""
    proc = run_script(script, *argv, check=False)
    return proc.returncode, proc.stderr


@pytest.fixture(scope="module")
def tools(
    small_map_csv, small_map_dataset, minilm_classifier, eedi_data, eedi, pointwise_run, tmp_path_factory
) -> dict:
    """Per tool: (script, arguments of run 1, arguments added for run 2, the name of its final output)."""
    mapping = str(eedi_data["mapping_csv"])
    candidates = load_from_disk(str(eedi["candidates"]))
    subsets = {n: tmp_path_factory.mktemp("candidates") / f"first{n}" for n in (10, 20)}
    for n, folder in subsets.items():  # few rows to rerank: the faults are in the writing
        candidates.select(range(n)).save_to_disk(str(folder))
    return {
        "build_map": (
            "data_builders/build_map.py",
            ["--train_csv", str(small_map_csv), "--validation_size", "0.25", "--output_dir", "{out}"],
            ["--seed", "7", "--overwrite"],
            "map",
        ),
        "build_eedi": (
            "data_builders/build_eedi.py",
            ["--train_csv", str(eedi_data["train_csv"]), "--misconceptions_csv", mapping, "--output_dir", "{out}"],
            ["--seed", "7", "--overwrite"],
            "eedi",
        ),
        "predict_classifier": (
            "scripts/predict_classifier.py",
            ["--model", str(minilm_classifier), "--input_csv", str(small_map_dataset / "validation.csv")]
            + ["--output_csv", "{out}"],
            ["--top_k", "2"],
            "predictions.csv",
        ),
        "retrieve": (  # its last write is the candidates folder
            "scripts/retrieve.py",
            ["--model", str(resolve_model_path(MINILM)), "--input_csv", str(eedi_data["train_csv"])]
            + ["--misconceptions_csv", mapping, "--output_csv", "{dir}/retrieved.csv", "--candidates_out", "{out}"],
            ["--candidates_k", "20"],
            "candidates",
        ),
        "rerank": (
            "scripts/rerank.py",
            ["--model", str(pointwise_run), "--candidates", str(subsets[20]), "--output_csv", "{out}"],
            ["--candidates", str(subsets[10])],  # fewer rows: a different output
            "reranked.csv",
        ),
    }


def _args(template: list[str], folder: Path, out: Path) -> list[str]:
    return [a.replace("{out}", str(out)).replace("{dir}", str(folder)) for a in template]


def _visible(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")}


def _check_complete(out: Path) -> None:
    if out.suffix == ".csv":
        assert len(pd.read_csv(out)) > 0
    else:
        assert len(load_from_disk(str(out))) > 0


@pytest.mark.slow
@pytest.mark.parametrize("tool", ["build_map", "build_eedi", "predict_classifier", "retrieve", "rerank"])
def test_sigkill_during_the_final_write_keeps_the_previous_output_and_a_rerun_completes(tools, tool, tmp_path):
    script, first, changed, name = tools[tool]
    out = tmp_path / name
    code, err = run_in_process(script, _args(first, tmp_path, out))
    assert code == 0, err
    before, visible = _digest(out), _visible(tmp_path)

    # Run 2, with a changed setting, killed with SIGKILL as it moves its finished output into place.
    log = tmp_path.parent / f"{tool}-renames.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "FAULT_LOG": str(log)}
    argv = [sys.executable, "tests/fault_runner.py", str(out), script, *_args(first + changed, tmp_path, out)]
    proc = subprocess.run(argv, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert str(out) in log.read_text().split()  # killed there, not elsewhere
    assert _digest(out) == before  # the previous complete output, untouched
    assert _visible(tmp_path) == visible  # nothing new and half-written beside it
    assert any(p.name.startswith(f".{name}.tmp-") for p in tmp_path.iterdir())  # what the kill left, hidden

    # Run 3 completes: the new output in place, and the killed run's temporary cleaned up.
    code, err = run_in_process(script, _args(first + changed, tmp_path, out))
    assert code == 0, err
    _check_complete(out)
    assert _digest(out) != before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{name}.")]


@pytest.mark.slow
def test_sigkill_before_any_output_leaves_none(tools, tmp_path):
    script, first, _, name = tools["predict_classifier"]
    out = tmp_path / name
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "tests/fault_runner.py", str(out), script, *_args(first, tmp_path, out)]
    proc = subprocess.run(argv, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert not out.exists() and _visible(tmp_path) == set()


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, read_only: bool) -> Path:
    """A real full disk (a small tmpfs filled to the last byte) or a real read-only filesystem at `folder`."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    folder.mkdir()
    options = "ro,size=64k" if read_only else "size=64k"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True)
    try:
        if not read_only:
            with contextlib.suppress(OSError), open(folder / "filler", "wb") as handle:
                while True:
                    handle.write(b"\0" * 4096)
                    handle.flush()
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("read_only", [False, True], ids=["disk-full", "read-only"])
@pytest.mark.parametrize("tool", ["build_map", "build_eedi", "predict_classifier", "retrieve", "rerank"])
def test_a_failed_write_exits_non_zero_naming_the_path_and_leaves_nothing(tools, tool, read_only, tmp_path):
    script, first, _, name = tools[tool]
    with mounted_tmpfs(tmp_path / "mnt", read_only) as folder:
        before = sorted(p.name for p in folder.iterdir())
        out = folder / name
        code, err = run_in_process(script, _args(first, folder, out))
        after = sorted(p.name for p in folder.iterdir())
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    reason = "Read-only file system" if read_only else "No space left on device"
    assert code == 1, err[-2000:]
    assert len(errors) == 1 and f"could not write {folder}/" in errors[0] and reason in errors[0], err[-2000:]
    assert "Traceback" not in err
    assert after == before  # no output, no temporary


# ---------------------------------------------------------------- names that are neither a folder nor a Hub id


@pytest.fixture(scope="module")
def bad_name_cases(small_map_csv, small_map_dataset, eedi_data, eedi) -> list[tuple[str, list[str], str]]:
    """(script, arguments, the bad name) for every place a dataset, model or candidates name is read."""
    map_ds, eedi_ds, cands = str(small_map_dataset), str(eedi_data["dataset"]), str(eedi["candidates"])
    csv, mapping = str(eedi_data["train_csv"]), str(eedi_data["mapping_csv"])
    minilm = str(resolve_model_path(MINILM))
    train_map = ["scripts/train_classifier.py", "--config", str(MAP_MINILM), "--output_dir", "{tmp}/run"]
    train_eedi = ["scripts/train_retriever.py", "--config", "recipes/eedi/minilm-cpu.yaml", "--output_dir", "{tmp}/r"]
    train_rerank = ["scripts/train_reranker.py", "--config", "recipes/eedi/reranker-minilm-cpu.yaml"]
    train_rerank += ["--output_dir", "{tmp}/rr", "--model_name_or_path", minilm]
    out = ["--output_csv", "{tmp}/out.csv"]
    return [
        (*train_map, "--dataset_name", "data/map-typo"),
        (*train_map, "--dataset_name", map_ds, "--model_name_or_path", "data/model-typo"),
        (*train_map, "--dataset_name", map_ds, "--model_name_or_path", "no-such-org/model-typo"),
        (*train_eedi, "--dataset_name", "data/eedi-typo"),
        (*train_eedi, "--dataset_name", "./data/eedi-typo"),
        (*train_eedi, "--dataset_name", eedi_ds, "--model_name_or_path", "data/model-typo"),
        (*train_rerank, "--dataset_name", "org/eedi-typo@main", "--candidates", cands),
        (*train_rerank, "--dataset_name", eedi_ds, "--candidates", "data/candidates-typo"),
        ("scripts/predict_classifier.py", "--model", "data/model-typo", "--input_csv", str(small_map_csv), *out),
        (
            "scripts/retrieve.py",
            "--model",
            "data/model-typo",
            "--input_csv",
            csv,
            "--misconceptions_csv",
            mapping,
            *out,
        ),
        ("scripts/rerank.py", "--model", "data/model-typo", "--candidates", cands, *out),
        ("scripts/rerank.py", "--model", minilm, "--candidates", "data/candidates-typo", *out),
        ("scripts/predict_eedi.py", "--retriever", "org/typo", "--reranker", minilm, "--input_csv", csv)
        + ("--misconceptions_csv", mapping, *out),
        ("scripts/generate_synthetic.py", "--dataset_name", "data/eedi-typo", "--output_dir", "{tmp}/gen"),
        ("scripts/explain.py", "--input_csv", csv, "--output_dir", "{tmp}/x", "--model_name_or_path", "data/llm-typo"),
    ]


def test_names_that_are_neither_a_folder_nor_on_the_hub_fail_in_one_line(bad_name_cases, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(REPO)
    for case in bad_name_cases:
        script, *argv = (a.replace("{tmp}", str(tmp_path)) for a in case)
        bad = next(a for a in argv if "typo" in a)
        code, err = run_in_process(script, argv)
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2, (case, err[-2000:])
        assert len(errors) == 1 and f"'{bad}'" in errors[0], (case, err[-2000:])
        local = str(Path(bad.split("@")[0]).absolute()) if not bad.startswith("org/") else ""
        assert local in errors[0] and "does not exist" in errors[0], (case, errors[0])
        if bad.startswith(("data/", "org/", "no-such-org/")):  # also a valid Hub id: the Hub was asked too
            assert "offline: HF_HUB_OFFLINE is set" in errors[0], (case, errors[0])
        assert "Traceback" not in err
        assert not (tmp_path / "out.csv").exists()
