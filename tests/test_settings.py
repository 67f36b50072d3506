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
"""The typed settings saved beside a model: written and read back unchanged, older files read with defaults, and a
wrong or missing file named in one clear error."""

import json
import logging

import pytest

from misconceptions import ClassifierSettings, InputError, RerankerSettings, RetrieverSettings


def test_settings_round_trip_through_their_json_file(tmp_path):
    retriever = RetrieverSettings(
        base_model="Qwen/Qwen2.5-32B-Instruct-GPTQ-Int4",
        quantization={"quant_method": "gptq", "bits": 4, "group_size": 128},
        pooling="last_token",
        query_template="<Question> {QuestionText}",
        loss_scale=20.0,
        explanations=True,
        seen_misconception_ids=[3, 1, 2],
    )
    path = retriever.save(tmp_path)
    assert path.name == "misconceptions_retriever.json"
    saved = json.loads(path.read_text())
    assert saved["task"] == "eedi-retrieval" and saved["loss_scale"] == 20.0
    assert saved["explanations"] is True
    assert RetrieverSettings.load(tmp_path) == retriever
    assert RetrieverSettings.load(tmp_path).quant_method == "gptq"
    bnb = ClassifierSettings(quantization={"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"})
    assert bnb.quant_method == "bitsandbytes" and ClassifierSettings().quant_method is None


def test_an_older_file_reads_with_defaults_and_unknown_keys_are_ignored(tmp_path, caplog):
    (tmp_path / RerankerSettings.FILE).write_text(
        json.dumps({"task": "eedi-reranking", "reranker_type": "pointwise", "window": 8, "from_the_future": 1})
    )
    with caplog.at_level(logging.WARNING):
        settings = RerankerSettings.load(tmp_path)
    assert (settings.reranker_type, settings.window, settings.stride, settings.retriever_scale) == (
        "pointwise",
        8,
        10,
        20.0,
    )
    assert "from_the_future" in caplog.text


def test_a_missing_wrong_or_broken_file_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match=r"no misconceptions_classifier.json; expected a folder written by scripts/"):
        ClassifierSettings.load(tmp_path)
    assert RetrieverSettings.load(tmp_path) == RetrieverSettings()  # any sentence-transformers folder retrieves
    RetrieverSettings().save(tmp_path)
    (tmp_path / ClassifierSettings.FILE).write_text((tmp_path / RetrieverSettings.FILE).read_text())
    with pytest.raises(InputError, match="task is 'eedi-retrieval', expected 'map-classification'"):
        ClassifierSettings.load(tmp_path)
    (tmp_path / RerankerSettings.FILE).write_text("{not json")
    with pytest.raises(InputError, match=r"misconceptions_reranker.json: not valid JSON"):
        RerankerSettings.load(tmp_path)
