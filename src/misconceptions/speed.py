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
"""Training speed on the CPU without changing what is learned (bench/train_speed.py measures each lever).

- `native_bf16()`: whether the CPU computes bf16 MatMuls natively (AVX512-BF16 or AMX). `cpu_bf16: auto` (configs.SpeedOptions)
  turns on bf16 autocast for CPU training there, and leaves it off where torch would emulate bf16 (AVX2 alone), which
  is slower than fp32. `use_cpu_bf16(choice)` reads the same choice for inference (the cross-encoder's scoring).
- `bucket_by_length(model, chunk_size)`: a padded training batch runs as length-sorted chunks, each cut to its own
  longest row. Sentence-transformers pads each column of a batch (queries, descriptions, (query, description) pairs)
  to its longest row, so a batch of mostly short rows pays for its longest one; with the attention mask, the real
  tokens' outputs are the same either way, and the padded positions' outputs are zeros that pooling never reads.
"""

import functools

import torch
from torch import nn

from .configs import CPU_BF16_CHOICES
from .profiling import cpu_info


BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# The outputs whose first dimension is the batch (and, for last_hidden_state, second the sequence) that bucketing
# puts back in the batch's order; any other output (hidden states of every layer, attentions) runs unbucketed.
_SEQUENCE_OUTPUTS = ("last_hidden_state",)
_ROW_OUTPUTS = ("pooler_output", "logits")


def native_bf16() -> bool:
    """True when the CPU has AVX512-BF16 or AMX-BF16, where oneDNN runs bf16 MatMuls natively."""
    return any(flag in cpu_info()["flags"] for flag in BF16_FLAGS)


def use_cpu_bf16(choice: str) -> bool:
    """Whether a `cpu_bf16` choice ('auto', 'true', 'false') turns bf16 autocast on for this CPU."""
    choice = str(choice).lower()
    if choice not in CPU_BF16_CHOICES:
        raise ValueError(f"cpu_bf16 must be one of {CPU_BF16_CHOICES}, got '{choice}'")
    return choice == "true" or (choice == "auto" and native_bf16())


def bucket_by_length(model: nn.Module, chunk_size: int) -> nn.Module:
    """Make `model`'s training forward passes run in length-sorted chunks of `chunk_size` rows, each cut to its own
    longest row (right padding), and put the outputs back in the batch's order. Inference and eval are untouched
    (sentence-transformers' encode already sorts by length). Returns `model`, changed in place."""
    if chunk_size < 1:
        raise ValueError(f"length_bucket_size must be >= 1, got {chunk_size}")
    if getattr(model.forward, "_bucketed", False):
        return model
    forward = model.forward

    @functools.wraps(forward)  # inspect.signature (sentence-transformers filters the kwargs by it) sees the original
    def bucketed(*args, input_ids=None, attention_mask=None, **kwargs):
        plain = (
            args
            or not model.training
            or input_ids is None
            or attention_mask is None
            or input_ids.shape[0] <= chunk_size
            or kwargs.get("output_hidden_states")
            or kwargs.get("output_attentions")
            or bool(attention_mask[:, 0].eq(0).any())  # left padding: the cut below assumes right padding
        )
        if plain:
            return forward(*args, input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return _bucketed_forward(forward, input_ids, attention_mask, kwargs, chunk_size)

    bucketed._bucketed = True
    model.forward = bucketed
    return model


def _bucketed_forward(forward, input_ids, attention_mask, kwargs, chunk_size):
    batch, width = input_ids.shape
    lengths = attention_mask.sum(dim=1)
    order = torch.argsort(lengths, descending=True, stable=True)
    per_row = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor) and v.shape[:2] == (batch, width)}
    parts = []
    for rows in order.split(chunk_size):
        cut = int(lengths[rows].max())
        chunk_kwargs = kwargs | {k: v[rows, :cut] for k, v in per_row.items()}
        parts.append(
            forward(input_ids=input_ids[rows, :cut], attention_mask=attention_mask[rows, :cut], **chunk_kwargs)
        )
    inverse = torch.argsort(order)  # where each row of the batch went
    merged = parts[0].__class__()
    for key in parts[0]:
        values = [part[key] for part in parts]
        if key in _SEQUENCE_OUTPUTS:
            values = [nn.functional.pad(v, (0, 0, 0, width - v.shape[1])) for v in values]
        elif key not in _ROW_OUTPUTS:
            continue
        merged[key] = torch.cat(values)[inverse]
    return merged
