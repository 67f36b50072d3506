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
"""One MiniLM training step (forward, backward, AdamW) on a fixed batch, four ways: eager fp32, eager bf16 autocast,
`torch.compile` (inductor, CPU) fp32 and compiled bf16. A quick look at whether compilation is a lever for the CPU
recipes before wiring it into them (TrainingArguments' `torch_compile`): milliseconds per step after two warm-up
steps, whose time (compilation included) is printed apart.

    python bench/compile_step.py --batch_size 32 --length 40 --output bench/results/compile_step.json
"""

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoModel

from misconceptions.model_utils import resolve_model_path
from misconceptions.profiling import cpu_info


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--length", type=int, default=40, help="tokens per row (no padding)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps after 2 warm-up steps")
    parser.add_argument("--output", required=True, help="JSON results file")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = AutoModel.from_pretrained(resolve_model_path("builtin:all-MiniLM-L6-v2")).train()
    ids = torch.randint(1000, 20000, (args.batch_size, args.length))
    mask = torch.ones_like(ids)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step(module, bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = module(input_ids=ids, attention_mask=mask).last_hidden_state
        out.float().pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()

    results = {"cpu": cpu_info(), "batch_size": args.batch_size, "length": args.length, "runs": {}}
    for name, bf16, compiled in [("eager fp32", False, False), ("eager bf16", True, False),
                                 ("compiled fp32", False, True), ("compiled bf16", True, True)]:  # fmt: skip
        module = torch.compile(model) if compiled else model
        started = time.perf_counter()
        step(module, bf16)
        step(module, bf16)
        warmup = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(args.steps):
            step(module, bf16)
        ms = (time.perf_counter() - started) / args.steps * 1000
        results["runs"][name] = {"warmup_seconds": round(warmup, 1), "ms_per_step": round(ms, 1)}
        print(f"{name:14s} warm-up {warmup:6.1f} s   {ms:7.1f} ms/step", flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
