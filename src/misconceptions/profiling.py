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
"""Where a training step's time goes, for any Trainer (`step_profile: true` in a recipe).

`StepProfiler` is a TrainerCallback: forward hooks on the model time the forward passes and count the tokens they
read (attention masks); the Trainer's own step events split the rest into data loading (batch fetch, collation and
a collator's on-the-fly tokenization, between two steps), backward (with the loss, gradient clipping, and the
tokenization of a loss that tokenizes, as the cross-encoder's does), the optimizer step (with the scheduler and
zero_grad), evaluation and checkpoint saving. It writes `step_profile.json` in the output folder at the end, with samples/s and
tokens/s over the profiled steps (the first `warmup_steps` left out) and the CPU's ISA flags.
"""

import platform
import time
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import TrainerCallback

from .io_utils import write_json


PROFILE_FILE = "step_profile.json"
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def cpu_info() -> dict:
    """The CPU's model name and the instruction sets torch's CPU kernels care about (int8 and bf16 MatMuls are several
    times faster with AVX-512 VNNI/BF16 or AMX than with AVX2 alone), so figures from different CPUs are not compared.
    """
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:  # not Linux
        return {"model": platform.processor() or platform.machine(), "flags": []}
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name", "unknown"), "flags": [f for f in ISA_FLAGS if f in flags]}


def _tokens(args: tuple, kwargs: dict) -> int:
    """Tokens in one forward call: the attention mask's ones, wherever the model takes it (kwargs, or a features
    mapping as sentence-transformers passes it: a dict, or a BatchEncoding for the cross-encoder)."""
    for source in (kwargs, *(a for a in args if isinstance(a, Mapping))):
        mask = source.get("attention_mask")
        if isinstance(mask, torch.Tensor):
            return int(mask.sum())
        ids = source.get("input_ids")
        if isinstance(ids, torch.Tensor):
            return ids.numel()
    return 0


class StepProfiler(TrainerCallback):
    """Time each part of the training steps; `summary()` (and `step_profile.json` at the end) holds the totals."""

    def __init__(self, warmup_steps: int = 2):
        self.warmup_steps = warmup_steps
        self.parts = dict.fromkeys(("data", "forward", "backward", "optimizer", "evaluation", "saving"), 0.0)
        self.steps = self.samples = self.tokens = 0
        self.step_seconds = 0.0
        self._hooks: list = []
        self._forward = self._forward_started = 0.0
        self._step_tokens = 0
        self._last_end: float | None = None
        self._step_start = self._optimizer_start = self._data = 0.0
        self._extra = 0.0  # evaluation/saving time that fell between two steps

    def _pre_forward(self, module, args, kwargs):
        if module.training:
            self._forward_started = time.perf_counter()
            self._step_tokens += _tokens(args, kwargs)

    def _post_forward(self, module, args, kwargs, output):
        if module.training and self._forward_started:
            self._forward += time.perf_counter() - self._forward_started
            self._forward_started = 0.0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None and not self._hooks:
            self._hooks = [
                model.register_forward_pre_hook(self._pre_forward, with_kwargs=True),
                model.register_forward_hook(self._post_forward, with_kwargs=True),
            ]

    def on_step_begin(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self._data = (now - self._last_end - self._extra) if self._last_end is not None else 0.0
        self._step_start, self._extra = now, 0.0
        self._forward = 0.0

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self._optimizer_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if state.global_step > self.warmup_steps:
            self.steps += 1
            self.step_seconds += now - self._step_start + self._data
            self.parts["data"] += self._data
            self.parts["forward"] += self._forward
            self.parts["backward"] += max(self._optimizer_start - self._step_start - self._forward, 0.0)
            self.parts["optimizer"] += now - self._optimizer_start  # with the scheduler and zero_grad
            self.samples += args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
            self.tokens += self._step_tokens
        self._step_tokens = 0
        self._last_end = now

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        seconds = next((v for k, v in (metrics or {}).items() if k.endswith("_runtime")), 0.0)
        self.parts["evaluation"] += seconds
        self._extra += seconds

    def on_save(self, args, state, control, **kwargs):
        if self._last_end is not None:
            seconds = time.perf_counter() - self._last_end - self._extra
            self.parts["saving"] += max(seconds, 0.0)
            self._extra += max(seconds, 0.0)

    def summary(self) -> dict:
        """Totals over the profiled steps: seconds by part, samples/s and tokens/s, and the CPU."""
        seconds = self.step_seconds or float("nan")
        return {
            "profiled_steps": self.steps,
            "warmup_steps_left_out": self.warmup_steps,
            "samples_per_second": self.samples / seconds,
            "tokens_per_second": self.tokens / seconds,
            "seconds": {k: round(v, 3) for k, v in self.parts.items()},
            "share_of_step": {
                k: round(v / seconds, 4) for k, v in self.parts.items() if k not in ("evaluation", "saving")
            },
            "cpu": cpu_info(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        }

    def on_train_end(self, args, state, control, **kwargs):
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        if state.is_world_process_zero:
            write_json(Path(args.output_dir) / PROFILE_FILE, self.summary())


def profile_callbacks(training_args) -> list[TrainerCallback]:
    """The Trainer callbacks a recipe asks for: a `StepProfiler` with `step_profile: true`, else none."""
    return [StepProfiler()] if getattr(training_args, "step_profile", False) else []
