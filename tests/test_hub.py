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
"""Hub round trips, stopped at the `huggingface_hub.HfApi` boundary (tests/fake_hub.py): what would be sent, cards,
privacy, revisions, failed pushes, and loading a pushed model back by its Hub id."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from datasets import load_dataset, load_from_disk
from huggingface_hub import HfApi

from misconceptions import CLASSIFIER_META, InputError
from misconceptions.hub import HubPushError, push_model_folder, resolve_model_dir, split_revision

from .conftest import MAP_MINILM as MINILM
from .conftest import MAP_TINY as TINY
from .conftest import REPO
from .fake_hub import fake_methods, read_record
from .test_eedi_data import write_small_eedi


def _builder(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "data_builders" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """Patch HfApi in this process; returns (record path, cache folder, a function to make uploads fail)."""
    record, cache = tmp_path / "hub_record.jsonl", tmp_path / "hub_cache"

    def patch(fail: bool = False) -> None:
        for name, method in fake_methods(record, cache, fail).items():
            monkeypatch.setattr(HfApi, name, method)

    patch()
    return record, cache, patch


def _snapshot(cache: Path, repo_type: str, repo_id: str, revision: str = "main") -> Path:
    repo = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    return repo / "snapshots" / (repo / "refs" / revision).read_text()


def _front_matter(readme: str) -> dict:
    return yaml.safe_load(readme.split("---")[1])


def test_map_dataset_push_sends_parquet_and_card_privately(small_map_csv, tmp_path, fake_hub):
    record, cache, _ = fake_hub
    out = tmp_path / "map"
    _builder("build_map").main(
        ["--train_csv", str(small_map_csv), "--output_dir", str(out), "--push_to_hub", "org/map", "--revision", "v1"]
    )
    calls = read_record(record)
    assert [c["call"] for c in calls] == ["create_repo", "create_branch", "upload_folder"]
    assert calls[0] == {"call": "create_repo", "repo_id": "org/map", "private": True, "repo_type": "dataset"}
    assert calls[1]["branch"] == "v1"
    upload = calls[2]
    assert upload["revision"] == "v1" and upload["repo_type"] == "dataset"
    assert upload["files"] == [
        "README.md",
        "default/train-00000-of-00001.parquet",
        "default/validation-00000-of-00001.parquet",
    ]
    card = upload["readme"]
    meta = _front_matter(card)
    assert meta["configs"][0]["config_name"] == "default"
    assert {f["split"] for f in meta["configs"][0]["data_files"]} == {"train", "validation"}
    for section in ("## Source", "## Configs, splits and schema", "## How it was built", "## License"):
        assert section in card, section
    assert "build_map.py" in card and str(small_map_csv) in card and "`label` | ClassLabel" in card
    assert (out / "README.md").read_text() == card  # the same card is saved beside the dataset
    # What was sent loads back, through the card's configs, as the dataset saved locally (ClassLabel names too).
    pushed = load_dataset(str(_snapshot(cache, "dataset", "org/map", "v1")))
    local = load_from_disk(str(out))
    assert set(pushed) == {"train", "validation"}
    assert pushed["train"].features["label"].names == local["train"].features["label"].names
    assert pushed["validation"].to_pandas().equals(local["validation"].to_pandas())


def test_public_flag_and_eedi_configs(tmp_path, fake_hub):
    record, cache, _ = fake_hub
    train_csv, mapping_csv = write_small_eedi(tmp_path / "csv")
    out = tmp_path / "eedi"
    _builder("build_eedi").main(
        [
            "--train_csv",
            str(train_csv),
            "--misconceptions_csv",
            str(mapping_csv),
            "--output_dir",
            str(out),
            "--push_to_hub",
            "org/eedi",
            "--public",
        ]
    )
    calls = read_record(record)
    assert calls[0]["private"] is False and [c["call"] for c in calls] == ["create_repo", "upload_folder"]
    assert "misconceptions/train-00000-of-00001.parquet" in calls[1]["files"]
    snapshot = str(_snapshot(cache, "dataset", "org/eedi"))
    pairs = load_dataset(snapshot)
    names = load_dataset(snapshot, "misconceptions", split="train")
    local = load_from_disk(str(out))
    assert set(pairs) == {"train", "unlabelled"} and pairs["train"].num_rows == local["train"].num_rows
    assert names.num_rows == local["misconceptions"].num_rows


def test_failed_dataset_push_is_reported_and_output_kept(small_map_csv, tmp_path, fake_hub, capsys):
    _, _, patch = fake_hub
    patch(fail=True)
    out = tmp_path / "map"
    with pytest.raises(SystemExit) as exit_info:
        _builder("build_map").main(
            ["--train_csv", str(small_map_csv), "--output_dir", str(out), "--push_to_hub", "org/map"]
        )
    assert exit_info.value.code == 1
    message = capsys.readouterr().err
    assert "org/map" in message and "403" in message and f"the dataset saved in {out} is complete" in message
    assert load_from_disk(str(out))["train"].num_rows > 0 and (out / "README.md").is_file()


def _run_under_fake_hub(record: Path, cache: Path, *args: str, fail: bool = False) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "FAKE_HUB_FAIL": "1" if fail else "0",
    }
    return subprocess.run(
        [sys.executable, "-m", "tests.fake_hub", str(record), str(cache), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def pushed_classifier(small_map_dataset, tmp_path_factory):
    """A tiny classifier trained and pushed by the real script, with HfApi stopped at the boundary."""
    root = tmp_path_factory.mktemp("pushed")
    record, cache, out = root / "record.jsonl", root / "cache", root / "map-tiny"
    proc = _run_under_fake_hub(
        record,
        cache,
        "scripts/train_classifier.py",
        "--config",
        str(MINILM),
        "--dataset_name",
        str(small_map_dataset),
        "--output_dir",
        str(out),
        *TINY,
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
        "--push_to_hub",
        "true",
        "--hub_model_id",
        "org/map-tiny",
        "--hub_revision",
        "exp1",
        "--hub_strategy",
        "end",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return record, cache, out


def test_trained_model_pushed_once_with_card(pushed_classifier):
    record, _, out = pushed_classifier
    calls = read_record(record)
    uploads = [c for c in calls if c["call"] == "upload_folder"]
    assert len(uploads) == 1, calls  # one push, after the final evaluation (not the Trainer's "Model save" too)
    assert all(c["private"] is True for c in calls if c["call"] == "create_repo")
    upload = uploads[0]
    assert upload["repo_id"] == "org/map-tiny" and upload["revision"] == "exp1"
    assert "MAP@3" in upload["commit_message"]
    files = set(upload["files"])
    assert {"model.safetensors", "config.json", "README.md", CLASSIFIER_META, "tfidf_lr.skops"} <= files
    assert (out / "checkpoint-2").is_dir() and not any(f.startswith(("checkpoint-", "runs/")) for f in files)
    card = upload["readme"]
    assert card == (out / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and "misconceptions" in meta["tags"]
    eval_map = json.loads((out / "eval_results.json").read_text())["eval_map@3"]
    assert f"| eval_map@3 | {eval_map:.4f} |" in card
    assert "scripts/train_classifier.py --config" in card and "--hub_revision exp1" in card  # the launch command
    assert MINILM.read_text().strip().splitlines()[-1] in card  # the recipe itself
    assert "hf download org/map-tiny" in card and card.count("How this model was made") == 1


def test_pushed_model_loads_back_by_hub_id(pushed_classifier, small_map_dataset, tmp_path):
    """The pushed files, found by `ORG/NAME@REVISION` through snapshot_download, predict what the local folder does."""
    _, cache, out = pushed_classifier
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "TOKENIZERS_PARALLELISM": "false"}
    outputs = {}
    for name, model in (("hub", "org/map-tiny@exp1"), ("local", str(out))):
        outputs[name] = tmp_path / f"{name}.csv"
        proc = subprocess.run(
            [
                sys.executable,
                "scripts/predict_classifier.py",
                "--model",
                model,
                "--input_csv",
                str(small_map_dataset / "validation.csv"),
                "--output_csv",
                str(outputs[name]),
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert pd.read_csv(outputs["hub"]).equals(pd.read_csv(outputs["local"]))


def test_failed_model_push_raises_and_keeps_the_folder(pushed_classifier, tmp_path, fake_hub):
    _, _, out = pushed_classifier
    _, _, patch = fake_hub
    patch(fail=True)
    before = sorted(p.name for p in out.iterdir())
    args = type("Args", (), {"push_to_hub": True, "hub_model_id": "org/map-tiny", "hub_private_repo": None})()
    args.hub_revision, args.hub_token = None, None
    with pytest.raises(HubPushError, match="org/map-tiny.*403.*local copy"):
        push_model_folder(out, args, "retry")
    assert sorted(p.name for p in out.iterdir()) == before


def test_resolve_model_dir_names_and_revisions(tmp_path):
    assert split_revision("org/name@v2") == ("org/name", "v2")
    assert split_revision("org/name") == ("org/name", None)
    assert resolve_model_dir(str(tmp_path)) == str(tmp_path)
    with pytest.raises(InputError, match="'org/not-downloaded' is neither a folder here .* nor a model on the Hub"):
        resolve_model_dir("org/not-downloaded")
    with pytest.raises(InputError, match="not found"):
        resolve_model_dir("./no/such/folder")
