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
"""The scripts end to end, as a user runs them, on a few real MAP rows and the packaged models."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from misconceptions import CLASSIFIER_META, InputError, load_dataset_any, resolve_model_path
from misconceptions.cli import accelerate_set_one_thread

from .conftest import MAP_MINILM, MAP_TINY, REPO, run_script


SMOLLM2 = REPO / "recipes" / "map" / "smollm2-qlora-cpu.yaml"
MINILM, TINY = MAP_MINILM, MAP_TINY


@pytest.fixture
def minilm_run(minilm_classifier):
    """The session's tiny classifier (tests/conftest.py): 4 steps, evaluated every 2, logged to TensorBoard."""
    return minilm_classifier


def test_minilm_trains_and_saves(minilm_run):
    for name in (
        "tfidf_lr.skops",
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        CLASSIFIER_META,
        "README.md",
        "train_results.json",
        "eval_results.json",
    ):
        assert (minilm_run / name).is_file(), name
    config = json.loads((minilm_run / "config.json").read_text())
    meta = json.loads((minilm_run / CLASSIFIER_META).read_text())
    assert list(config["id2label"].values()) == meta["model_labels"]
    assert all(label.split(":")[0] in ("Correct", "Misconception", "Neither") for label in meta["model_labels"])
    # The weights moved away from the packaged checkpoint.
    base = load_file(f"{resolve_model_path('builtin:all-MiniLM-L6-v2')}/model.safetensors")
    trained = load_file(str(minilm_run / "model.safetensors"))
    key = next(k for k in trained if k.endswith("encoder.layer.0.attention.self.query.weight"))
    base_key = next(k for k in base if k.endswith("encoder.layer.0.attention.self.query.weight"))
    assert not torch.equal(trained[key], base[base_key])
    state = json.loads((minilm_run / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    # Plots of the run, each linked once from the card, and TensorBoard event files under output_dir/runs/.
    plots = sorted(p.name for p in (minilm_run / "plots").glob("*.png"))
    assert plots == ["confusion_matrix.png", "eval_metrics.png", "per_label_ap.png", "training_loss.png"]
    card = (minilm_run / "README.md").read_text()
    assert card.count("## Plots") == 1 and all(card.count(f"](plots/{name})") == 1 for name in plots)
    events = list((minilm_run / "runs").glob("*/events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(events[0].parent)).Reload().Tags()["scalars"]
    assert {"train/loss", "eval/map@3"} <= set(scalars), scalars


def test_predict_writes_submission_and_metrics(minilm_run, small_map_dataset, tmp_path):
    out = tmp_path / "sub.csv"
    proc = run_script(
        "scripts/predict_classifier.py",
        "--model",
        str(minilm_run),
        "--input_csv",
        str(small_map_dataset / "validation.csv"),
        "--output_csv",
        str(out),
        "--backend",
        "torch",  # the trainer evaluated on torch; the int8 default may swap near-ties (tests/test_onnx.py)
    )
    sub = pd.read_csv(out, dtype=str, keep_default_na=False)
    val = pd.read_csv(small_map_dataset / "validation.csv", dtype=str)
    assert list(sub.columns) == ["row_id", "Category:Misconception"] and list(sub.row_id) == list(val.row_id)
    assert all(len(labels.split(" ")) == 3 for labels in sub["Category:Misconception"])
    metrics = json.loads((tmp_path / "sub_metrics.json").read_text())
    eval_results = json.loads((minilm_run / "eval_results.json").read_text())
    assert metrics["map@3"] == pytest.approx(eval_results["eval_map@3"])  # the trainer's evaluation is predict's
    assert "MAP@3" in proc.stdout
    plots = sorted(p.name for p in (tmp_path / "sub_plots").glob("*.png"))
    assert (
        plots == ["confusion_matrix.png", "per_label_ap.png"] and f"Plots in {tmp_path / 'sub_plots'}" in proc.stdout
    )


def test_predict_unlabelled_and_unseen_labels(minilm_run, small_map_dataset, tmp_path):
    val = pd.read_csv(small_map_dataset / "validation.csv", dtype=str, keep_default_na=False)
    unlabelled = tmp_path / "test.csv"
    val.drop(columns=["Category", "Misconception"]).to_csv(unlabelled, index=False)
    run_script(
        "scripts/predict_classifier.py",
        "--model",
        str(minilm_run),
        "--input_csv",
        str(unlabelled),
        "--output_csv",
        str(tmp_path / "a.csv"),
    )
    assert (tmp_path / "a.csv").is_file() and not (tmp_path / "a_metrics.json").exists()
    # A label the model never saw is valid input: it is scored (as a miss) and reported, not an error.
    val.loc[val.index[0], "Misconception"] = "Never_Seen"
    labelled = tmp_path / "val.csv"
    val.to_csv(labelled, index=False)
    proc = run_script(
        "scripts/predict_classifier.py",
        "--model",
        str(minilm_run),
        "--input_csv",
        str(labelled),
        "--output_csv",
        str(tmp_path / "b.csv"),
    )
    assert "1 rows have labels the model never saw" in proc.stderr + proc.stdout
    assert json.loads((tmp_path / "b_metrics.json").read_text())["rows_with_unseen_labels"] == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "/nonexistent/model"], "/nonexistent/model"),
        (["--input_csv", "/nonexistent/input.csv"], "/nonexistent/input.csv: file not found"),
    ],
)
def test_predict_bad_paths(minilm_run, small_map_dataset, tmp_path, args, needle):
    base = {"--model": str(minilm_run), "--input_csv": str(small_map_dataset / "validation.csv")}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    out = tmp_path / "sub.csv"
    proc = run_script(
        "scripts/predict_classifier.py", *[x for kv in base.items() for x in kv], "--output_csv", str(out), check=False
    )
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


def test_predict_missing_column(minilm_run, small_map_dataset, tmp_path):
    bad = tmp_path / "bad.csv"
    pd.read_csv(small_map_dataset / "validation.csv", dtype=str).drop(columns=["MC_Answer"]).to_csv(bad, index=False)
    proc = run_script(
        "scripts/predict_classifier.py",
        "--model",
        str(minilm_run),
        "--input_csv",
        str(bad),
        "--output_csv",
        str(tmp_path / "sub.csv"),
        check=False,
    )
    assert proc.returncode == 2 and "bad.csv: missing column(s) ['MC_Answer']" in proc.stderr
    assert not (tmp_path / "sub.csv").exists()


def test_finished_run_is_not_overwritten(minilm_run, small_map_dataset):
    proc = run_script(
        "scripts/train_classifier.py",
        "--config",
        str(MINILM),
        "--dataset_name",
        str(small_map_dataset),
        "--output_dir",
        str(minilm_run),
        *TINY,
        check=False,
    )
    assert proc.returncode == 2 and "already holds a finished run" in proc.stderr


def _train_student(dataset, out, teacher, *extra: str, check: bool = True):
    """The tiny MiniLM run of the fixture, taught by `teacher`."""
    args = ["--dataset_name", str(dataset), "--output_dir", str(out), *TINY, "--teacher_model", str(teacher), *extra]
    return run_script("scripts/train_classifier.py", "--config", str(MINILM), *args, check=check)


def test_teacher_log_probs_follow_the_students_label_order(minilm_run, small_map_dataset):
    from misconceptions import load_classifier, map_frame, teacher_log_probs, texts_for

    df = map_frame(load_dataset_any(str(small_map_dataset))["validation"]).head(6)
    teacher = load_classifier(str(minilm_run))
    labels = list(reversed(teacher.settings.model_labels))
    expected = teacher.predict_probs(texts_for(df, teacher.settings.text_template))[:, ::-1]
    np.testing.assert_allclose(np.exp(teacher_log_probs(str(minilm_run), df, labels)), expected, rtol=1e-5, atol=1e-7)
    with pytest.raises(InputError, match=r"teacher_model .*minilm.*no label\(s\) \['Misconception:Unknown'\]"):
        teacher_log_probs(str(minilm_run), df, [*labels, "Misconception:Unknown"])


def test_a_student_learns_from_a_teacher(minilm_run, small_map_dataset, tmp_path):
    """The teacher's column reaches the loss: the same first step as the teacher's own run (same seed, data, init)
    logs another loss, and the student trains, saves and reloads like any classifier."""
    out = tmp_path / "student"
    _train_student(small_map_dataset, out, minilm_run, "--distill_weight", "0.5")
    first = json.loads((out / "trainer_state.json").read_text())["log_history"][0]
    reference = json.loads((minilm_run / "trainer_state.json").read_text())["log_history"][0]
    assert first["step"] == reference["step"] == 1
    assert np.isfinite(first["loss"]) and first["loss"] != pytest.approx(reference["loss"], rel=1e-4)
    sub = _predict_validation(out, small_map_dataset, tmp_path)
    assert len(pd.read_csv(sub)) == len(pd.read_csv(small_map_dataset / "validation.csv"))


def test_a_missing_teacher_is_a_clear_error(small_map_dataset, tmp_path):
    out = tmp_path / "student"
    proc = _train_student(small_map_dataset, out, tmp_path / "no-such-teacher", check=False)
    assert proc.returncode == 2 and "no-such-teacher" in proc.stderr and "Traceback" not in proc.stderr
    assert not (out / "model.safetensors").exists()


@pytest.mark.slow
def test_smollm2_qlora_trains_and_reloads_identically(small_map_dataset, tmp_path):
    """The MAP reference solution's QLoRA path on the CPU: 4-bit Linear layers, LoRA + head saved, reloaded with identical output."""
    out = tmp_path / "smollm2"
    run_script(
        "scripts/train_classifier.py",
        "--config",
        str(SMOLLM2),
        "--dataset_name",
        str(small_map_dataset),
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--gradient_accumulation_steps",
        "1",
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--load_best_model_at_end",
        "false",
        "--max_length",
        "48",
    )
    assert _count_4bit_layers(out) > 0
    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert any("lora_A" in k for k in adapter) and any("score" in k for k in adapter), list(adapter)[:5]
    meta = json.loads((out / CLASSIFIER_META).read_text())
    assert meta["quantization"]["load_in_4bit"] and meta["quantization"]["bnb_4bit_quant_type"] == "nf4"
    sub = _predict_validation(out, small_map_dataset, tmp_path)
    reloaded = json.loads((tmp_path / "sub_metrics.json").read_text())["map@3"]
    assert reloaded == pytest.approx(json.loads((out / "eval_results.json").read_text())["eval_map@3"], abs=1e-9)
    assert (
        pd.read_csv(sub)["Category:Misconception"].tolist()
        == pd.read_csv(out / "eval_predictions.csv")["Category:Misconception"].tolist()
    )


def _predict_validation(model_dir, dataset, tmp_path) -> Path:
    """predict_classifier.py over the dataset's validation.csv; returns the submission (its metrics beside it)."""
    sub = tmp_path / "sub.csv"
    csv = str(dataset / "validation.csv")
    run_script(
        "scripts/predict_classifier.py", "--model", str(model_dir), "--input_csv", csv, "--output_csv", str(sub)
    )
    return sub


def _count_4bit_layers(model_dir) -> int:
    import bitsandbytes as bnb

    from misconceptions import load_classifier

    model = load_classifier(str(model_dir)).model
    return sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


@pytest.mark.slow
def test_killed_training_resumes_from_last_checkpoint_under_plain_accelerate_launch(small_map_dataset, tmp_path):
    """Killed with SIGKILL after checkpoint-10, the run resumes from its last checkpoint when run again. The rerun is
    the plain `accelerate launch script RECIPE ...` people type (recipe first, no launch flags): it must parse the
    recipe and train on every core, not on the one thread accelerate's default OMP_NUM_THREADS=1 gives."""
    out = tmp_path / "resume"
    overrides = [
        "--dataset_name",
        str(small_map_dataset),
        "--output_dir",
        str(out),
        "--max_steps",
        "60",
        "--per_device_train_batch_size",
        "4",
        "--eval_strategy",
        "no",
        "--save_strategy",
        "steps",
        "--save_steps",
        "5",
        "--save_total_limit",
        "2",
        "--load_best_model_at_end",
        "false",
        "--max_length",
        "32",
    ]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {"HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen(
        [sys.executable, "scripts/train_classifier.py", "--config", str(MINILM), *overrides],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (out / "checkpoint-10" / "trainer_state.json").exists():
        assert first.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline, "no checkpoint-10 within 300 s"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (out / "train_results.json").exists(), "killed before finishing"
    last = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert 10 <= last < 60
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    command = [accelerate, "launch", "scripts/train_classifier.py", str(MINILM), *overrides]
    proc = subprocess.run(command, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    cores = len(os.sched_getaffinity(0))
    assert f"Training on the CPU with {cores} threads" in log, [line for line in log.splitlines() if "thread" in line]
    assert "Resuming training from the last checkpoint" in log and "checkpoint-" in log
    resumed_from = int(log.split("Resuming training from the last checkpoint:")[1].split("checkpoint-")[1].split()[0])
    assert resumed_from >= last
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 60
    # The rerun logged only the steps after the checkpoint: it did not start over.
    logged_steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert logged_steps and min(logged_steps) > 0


@pytest.mark.parametrize(
    ("cmdline", "environ", "expected"),
    [
        (["/venv/bin/python", "/venv/bin/accelerate", "launch", "train.py"], ["PATH=/bin"], True),
        (["accelerate", "launch", "--num_cpu_threads_per_process", "1", "train.py"], [], False),
        (["accelerate", "launch", "train.py"], ["OMP_NUM_THREADS=1"], False),  # the user's own setting
        (["python", "train.py"], [], False),  # not launched by accelerate: OMP_NUM_THREADS=1 is the user's
    ],
)
def test_only_accelerates_own_thread_default_is_overridden(cmdline, environ, expected):
    assert accelerate_set_one_thread(cmdline, environ) is expected
