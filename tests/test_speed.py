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
"""The CPU training-speed levers change speed only: a length-bucketed forward gives the same outputs and gradients
as the padded one (the packaged MiniLM, as retriever and as cross-encoder), and `cpu_bf16` turns bf16 on only where
asked and, for 'auto', only where the CPU has it."""

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from misconceptions import speed
from misconceptions.configs import ClassifierConfig, RerankerConfig, RetrieverConfig
from misconceptions.model_utils import resolve_model_path
from misconceptions.speed import bucket_by_length


TEXTS = [
    "Believes you add the denominators when adding fractions",
    "x",
    "Confuses the area of a rectangle with its perimeter, and doubles one side instead of adding both sides twice",
    "Thinks 0.5 is bigger than 0.75 because 5 > 75? no",
    "Rounds to the nearest ten instead of hundred",
    "Misreads the scale on a graph",
    "Adds the powers when multiplying different bases, as in 2^3 x 3^2 = 6^5",
    "Ignores the negative sign",
]


def _no_dropout(model_class):
    path = resolve_model_path("builtin:all-MiniLM-L6-v2")
    torch.manual_seed(0)
    model = model_class.from_pretrained(path, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return model.train(), AutoTokenizer.from_pretrained(path)


def _outputs_and_grads(model, batch, key):
    model.zero_grad()
    out = model(**batch)[key]
    mask = batch["attention_mask"].unsqueeze(-1) if out.dim() == 3 else 1
    (out * mask).pow(2).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return (out * mask).detach(), grads


@pytest.mark.parametrize(
    ("model_class", "key"), [(AutoModel, "last_hidden_state"), (AutoModelForSequenceClassification, "logits")]
)
def test_bucketed_forward_gives_the_padded_outputs_and_gradients(model_class, key):
    model, tokenizer = _no_dropout(model_class)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    plain_out, plain_grads = _outputs_and_grads(model, batch, key)
    calls = []  # the shapes the word embeddings see: one call per chunk
    model.get_input_embeddings().register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape))
    bucket_by_length(model, 3)
    bucketed_out, bucketed_grads = _outputs_and_grads(model, batch, key)
    assert len(calls) == 3 and sum(shape[0] for shape in calls) == len(TEXTS)  # 3 + 3 + 2 rows
    assert max(shape[1] for shape in calls) == batch["input_ids"].shape[1] and min(shape[1] for shape in calls) < 8
    assert bucketed_out.shape == plain_out.shape
    torch.testing.assert_close(bucketed_out, plain_out, atol=2e-5, rtol=1e-4)
    assert plain_grads.keys() == bucketed_grads.keys()
    for name, grad in plain_grads.items():  # the same sums in another order: fp32 rounding apart
        assert (bucketed_grads[name] - grad).norm() <= 1e-5 * grad.norm() + 1e-4, name


def test_bucketing_leaves_eval_and_left_padding_alone():
    model, tokenizer = _no_dropout(AutoModel)
    bucket_by_length(model, 2)
    calls = []
    model.get_input_embeddings().register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape))
    model.eval()
    model(**tokenizer(TEXTS, padding=True, return_tensors="pt"))
    model.train()
    tokenizer.padding_side = "left"
    model(**tokenizer(TEXTS, padding=True, return_tensors="pt"))
    assert len(calls) == 2  # one unbucketed call each
    with pytest.raises(ValueError, match="length_bucket_size must be >= 1"):
        bucket_by_length(model, 0)


@pytest.mark.parametrize("native", [True, False])
def test_cpu_bf16_auto_follows_the_cpu_and_a_recipe_s_own_precision_wins(monkeypatch, native):
    monkeypatch.setattr(speed, "native_bf16", lambda: native)
    common = {"output_dir": "unused", "use_cpu": True, "report_to": "none"}
    assert ClassifierConfig(**common, cpu_bf16="auto").bf16 is native
    assert ClassifierConfig(**common, cpu_bf16="true").bf16 is True
    assert ClassifierConfig(**common).bf16 is False  # default: fp32
    assert ClassifierConfig(**common, cpu_bf16="false", bf16=True).bf16 is True
    assert ClassifierConfig(output_dir="unused", cpu_bf16="true", report_to="none").bf16 is False  # not a CPU recipe
    # TRL's SFTConfig turns an unset bf16 on; on a CPU recipe cpu_bf16 decides.
    assert RerankerConfig(**common, cpu_bf16="auto").bf16 is native
    with pytest.raises(ValueError, match="cpu_bf16 must be one of"):
        ClassifierConfig(**common, cpu_bf16="yes")
    with pytest.raises(ValueError, match="length_bucket_size must be >= 0"):
        RetrieverConfig(**common, length_bucket_size=-1)
