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
"""scripts/estimate.py checked against the tiny Qwen2 models: parameter counts equal theirs exactly, weight memory
equals what `from_pretrained` allocates (fp32, bitsandbytes nf4; GPTQ-Int4 in .venv-gptq), and the activation
estimate is within 30% of the tensors autograd saves for backward; the recipes print figures and the README table
holds them."""

import json
import re

import pytest
import torch

from misconceptions.estimate import (
    Shape,
    activation_elements_per_token,
    count_parameters,
    lora_parameters,
    weight_bytes,
)

from .conftest import REPO, run_script
from .test_recipes import tiny


ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def tiny_qwen2():
    path = tiny("qwen2")
    return path, Shape.from_config(json.loads((path / "config.json").read_text()))


def allocated_bytes(model) -> int:
    """Every parameter and buffer storage once, and bitsandbytes' quantization state (absmax, code) beside them."""
    seen, total = set(), 0
    tensors = list(model.parameters()) + list(model.buffers())
    for tensor in list(tensors):
        state = getattr(tensor, "quant_state", None)
        if state is not None:
            tensors += [state.absmax, state.code]
    for tensor in tensors:
        key = tensor.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += tensor.untyped_storage().nbytes()
    return total


def test_parameter_counts_equal_the_tiny_models(tiny_qwen2):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    path, shape = tiny_qwen2

    def count(model):
        return sum(p.numel() for p in model.parameters())

    assert count(AutoModelForCausalLM.from_pretrained(path)) == count_parameters(shape, "causal_lm")
    assert count(AutoModel.from_pretrained(path)) == count_parameters(shape, "none")
    classifier = AutoModelForSequenceClassification.from_pretrained(path, num_labels=65)
    assert count(classifier) == count_parameters(shape, "seq_cls", 65)
    lora = get_peft_model(classifier, LoraConfig(task_type="SEQ_CLS", r=16, target_modules=ALL_LINEAR[:4]))
    trainable, total = lora.get_nb_trainable_parameters()
    assert trainable == lora_parameters(shape, 16, ALL_LINEAR[:4]) + shape.hidden * 65  # the score layer's copy
    assert total == count_parameters(shape, "seq_cls", 65) + trainable


def test_weight_memory_equals_what_from_pretrained_allocates(tiny_qwen2):
    from transformers import AutoModelForSequenceClassification, BitsAndBytesConfig

    path, shape = tiny_qwen2
    full = AutoModelForSequenceClassification.from_pretrained(path, num_labels=65)
    assert allocated_bytes(full) == weight_bytes(shape, 4, False, "seq_cls", 65)
    nf4 = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float16)
    quantized = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=65, dtype=torch.float16, quantization_config=nf4, device_map="cpu"
    )
    assert allocated_bytes(quantized) == weight_bytes(shape, 2, True, "seq_cls", 65)


def test_gptq_weight_memory_equals_what_from_pretrained_allocates():
    from transformers import AutoModelForCausalLM, GPTQConfig

    path = tiny("qwen2-gptq-int4")  # skips without gptqmodel/optimum: `make test-recipes` runs it in .venv-gptq
    shape = Shape.from_config(json.loads((path / "config.json").read_text()))
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float16, device_map="cpu", quantization_config=GPTQConfig(bits=4, backend="auto_trainable")
    )
    assert allocated_bytes(model) == weight_bytes(shape, 2, False, "causal_lm")


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora-all-linear"])
def test_activation_estimate_is_within_30_percent_of_what_autograd_saves(tiny_qwen2, lora):
    """bf16 forward in training mode, 4 x 256 tokens: the bytes of every tensor saved for backward, counted once."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    path, shape = tiny_qwen2
    torch.manual_seed(0)
    model = AutoModel.from_pretrained(path, dtype=torch.bfloat16)
    if lora:
        model = get_peft_model(model, LoraConfig(r=32, lora_alpha=64, lora_dropout=0.05, target_modules=ALL_LINEAR))
    model.train()
    saved = {}

    def pack(tensor):
        saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    batch, length = 4, 256
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(input_ids=torch.randint(0, 150000, (batch, length)))
    measured = sum(saved.values())
    per_token = activation_elements_per_token(shape, ALL_LINEAR if lora else None, 32 if lora else 0, lora)
    estimated = batch * length * shape.layers * per_token * 2
    assert 0.7 <= estimated / measured <= 1.3, (estimated, measured)


@pytest.mark.parametrize(
    "recipe", ["recipes/map/qwen2.5-math-1.5b-qlora.yaml", "recipes/eedi/exp012.yaml", "recipes/eedi/exp015.yaml"]
)
def test_estimate_prints_figures_for_the_gpu_recipes(recipe):
    proc = run_script("scripts/estimate.py", "--config", recipe)
    assert re.search(r"^parameters: [\d,]+, trainable [\d,]+$", proc.stdout, re.MULTILINE)
    assert "hours per epoch" in proc.stdout and re.search(r"^total per GPU: \d+\.\d GB$", proc.stdout.splitlines()[-1])


def test_readme_table_holds_the_estimates():
    """README's table of GPU recipes: each row's smallest GPU and GPU-hours per fold as scripts/estimate.py prints."""
    readme = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| `(recipes/[^`]+)` \| ([\d.]+) GB \| (\S+) \| ([\d.]+|-) \|$", readme, re.MULTILINE)
    assert len(rows) == 5, rows
    for recipe, total, gpu, hours in rows:
        out = run_script("scripts/estimate.py", "--config", recipe).stdout
        assert f"total per GPU: {total} GB" in out, recipe
        assert re.search(rf"smallest GPU that holds it[^:]*: {re.escape(gpu)}$", out, re.MULTILINE), recipe
        if hours != "-":
            match = re.search(r"^  A100-80GB\s+([\d.]+) h", out, re.MULTILINE)
            epochs = {"qwen2.5-math-1.5b-qlora.yaml": 3, "exp010.yaml": 10, "exp012.yaml": 10, "exp015.yaml": 2}
            assert f"{float(match.group(1)) * epochs[recipe.split('/')[-1]]:.1f}" == hours, recipe
