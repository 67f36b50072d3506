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
"""`step_profile: true`: where a training step's time goes, for each of the three CPU trainers."""

import json

import pytest

from misconceptions.profiling import PROFILE_FILE, cpu_info

from .conftest import EEDI_MINILM, MAP_MINILM, POINTWISE, run_script


def check_profile(folder, steps: int, batch: int) -> dict:
    profile = json.loads((folder / PROFILE_FILE).read_text())
    assert profile["profiled_steps"] == steps - 2  # the first 2 are left out
    parts = profile["seconds"]
    step_parts = parts["data"] + parts["forward"] + parts["backward"] + parts["optimizer"]
    total = profile["profiled_steps"] * batch / profile["samples_per_second"]
    assert step_parts == pytest.approx(total, rel=0.02)  # the parts add up to the steps' wall time
    assert parts["forward"] > 0 and parts["backward"] > 0 and parts["optimizer"] > 0
    assert profile["tokens_per_second"] > profile["samples_per_second"]  # masks were read: several tokens a sample
    assert profile["cpu"] == cpu_info() and "avx2" in profile["cpu"]["flags"]
    return profile


def test_classifier_step_profile(small_map_dataset, tmp_path):
    out = tmp_path / "classifier"
    run_script("scripts/train_classifier.py", "--config", str(MAP_MINILM), "--dataset_name", str(small_map_dataset),
               "--output_dir", str(out), "--max_steps", "6", "--per_device_train_batch_size", "8", "--max_length", "48",
               "--eval_strategy", "steps", "--eval_steps", "3", "--save_strategy", "steps", "--save_steps", "3",
               "--load_best_model_at_end", "false", "--tfidf_weight", "0", "--step_profile", "true")  # fmt: skip
    profile = check_profile(out, steps=6, batch=8)
    assert profile["seconds"]["evaluation"] > 0 and profile["seconds"]["saving"] > 0  # at steps 3 and 6
    assert "evaluation" not in profile["share_of_step"]


def test_retriever_step_profile(eedi_data, tmp_path):
    out = tmp_path / "retriever"
    run_script("scripts/train_retriever.py", "--config", str(EEDI_MINILM), "--dataset_name", str(eedi_data["dataset"]),
               "--output_dir", str(out), "--max_steps", "5", "--per_device_train_batch_size", "8",
               "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
               "--query_max_length", "64", "--document_max_length", "32", "--num_negatives", "1",
               "--step_profile", "true")  # fmt: skip
    check_profile(out, steps=5, batch=8)


def test_cross_encoder_step_profile(eedi, tmp_path):
    out = tmp_path / "cross-encoder"
    run_script("scripts/train_reranker.py", "--config", str(POINTWISE), "--dataset_name", str(eedi["dataset"]),
               "--candidates", str(eedi["candidates"]), "--output_dir", str(out),
               "--model_name_or_path", "builtin:all-MiniLM-L6-v2", "--max_steps", "5",
               "--per_device_train_batch_size", "8", "--final_eval", "false", "--step_profile", "true")  # fmt: skip
    check_profile(out, steps=5, batch=8)


def test_no_profile_unless_asked(minilm_classifier):
    assert not (minilm_classifier / PROFILE_FILE).exists()
