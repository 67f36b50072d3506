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
"""Cost on paper before launching: parameters, memory per GPU and hours per epoch of a recipe, from the model's shape.

Usage:

    python scripts/estimate.py --config recipes/eedi/exp012.yaml [--gpu A100-80GB] [--num_gpus N]
        [--accelerate_config accelerate_configs/fsdp.yaml] [--rows_per_epoch 2185]

Prints the parameters (total and trainable), memory per GPU by part (weights by quantization, LoRA, gradients,
optimizer state, activations with and without gradient checkpointing) under DDP, FSDP and ZeRO-3, and hours per
epoch on a few GPUs at a stated utilisation; for a vLLM recipe, the weights per GPU and the KV cache. It ends with
one line, `total per GPU: <N> GB`, for the chosen setting (the accelerate config's strategy and process count, or
--num_gpus under DDP). Model shapes come from config.json (local folder or Hub cache), else from the shapes of the
recipes' own base models shipped in src/misconceptions/estimate.py.
"""

import argparse
from pathlib import Path

import yaml

from misconceptions import InputError, cli_entry
from misconceptions.estimate import (
    GPUS,
    UTILISATION,
    estimate,
    hours_per_epoch,
    known_shape_source,
    model_shape,
    recipe_from_yaml,
    smallest_gpu,
)


# Training rows one epoch sees by default: MAP's 80% training split of 36,696 rows; one Eedi fold model trains on
# half of the 4,370 labelled wrong answers (2 folds).
DEFAULT_ROWS = {"map": 29357, "eedi": 2185}
STRATEGIES = {"MULTI_GPU": "ddp", "FSDP": "fsdp", "DEEPSPEED": "zero3", "NO": "ddp"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config_file", nargs="?", help="the recipe (or --config)")
    parser.add_argument("--config", dest="config_flag", help="a recipe in recipes/")
    parser.add_argument("--gpu", default="A100-80GB", choices=sorted(GPUS), help="the GPU to check the fit against")
    parser.add_argument("--num_gpus", type=int, default=None, help="GPUs (default: the accelerate config's, else 1)")
    parser.add_argument("--accelerate_config", default=None, help="accelerate config: its strategy and process count")
    parser.add_argument("--rows_per_epoch", type=int, default=None, help="training rows an epoch sees")
    args = parser.parse_args(argv)
    args.config = args.config_flag or args.config_file
    if not args.config:
        parser.error("give a recipe: --config recipes/eedi/exp012.yaml")
    return args


def launch_setting(accelerate_config: str | None, num_gpus: int | None) -> tuple[str, int]:
    if not accelerate_config:
        return "ddp", num_gpus or 1
    try:
        config = yaml.safe_load(Path(accelerate_config).read_text())
    except FileNotFoundError:
        raise InputError(f"{accelerate_config}: accelerate config not found") from None
    strategy = STRATEGIES.get(str(config.get("distributed_type", "NO")), "ddp")
    return strategy, num_gpus or int(config.get("num_processes", 1))


@cli_entry
def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        settings = yaml.safe_load(Path(args.config).read_text())
    except FileNotFoundError:
        raise InputError(f"{args.config}: recipe not found") from None
    task = Path(args.config).parent.name
    rows = args.rows_per_epoch or DEFAULT_ROWS.get(task, 1000)
    recipe = recipe_from_yaml(settings, rows)
    shape = model_shape(recipe.model)
    strategy, gpus = launch_setting(args.accelerate_config, args.num_gpus)
    print(f"{args.config}: {recipe.model} (shape: {known_shape_source(recipe.model)})")
    print(f"  {shape.layers} layers, hidden {shape.hidden}, intermediate {shape.intermediate}, heads {shape.heads}/"
          f"{shape.kv_heads} (q/kv), vocab {shape.vocab}, quantization "
          f"{'nf4 (bitsandbytes)' if recipe.load_in_4bit else (shape.quantization or {}).get('quant_method', 'none')}")  # fmt: skip
    chosen = estimate(recipe, shape, gpus, strategy)
    print(
        f"parameters: {chosen['parameters']:,}"
        + (f", trainable {chosen['trainable']:,}" if "trainable" in chosen else "")
    )
    if recipe.vllm:
        tp = int(settings.get("tensor_parallel_size", 1))
        print(f"vLLM, tensor parallel {tp}: weights {chosen['weights']:.1f} GB per GPU; KV cache "
              f"{chosen['kv_cache_token_bytes'] / 1e6:.3f} MB a token, {chosen['kv_cache_per_sequence']:.2f} GB per GPU "
              f"for one {settings.get('max_model_len', 4096)}-token sequence; vLLM fills "
              f"{settings.get('gpu_memory_utilization', 0.9):.0%} of each GPU, the rest of it with KV cache")  # fmt: skip
        total = chosen["weights"] + chosen["kv_cache_per_sequence"]
        print(f"smallest GPU that holds it: {smallest_gpu(total) or 'none listed'}")
        print(f"total per GPU: {total:.1f} GB")
        return chosen
    print(f"tokens per device step: {chosen['tokens_per_step']:,} ({recipe.sequences_per_step} sequences of "
          f"{recipe.tokens_per_sequence} tokens)")  # fmt: skip
    print("\nmemory per GPU (GB)      " + "".join(f"{name:>10}" for name in ("DDP", "FSDP", "ZeRO-3")))
    reports = {s: estimate(recipe, shape, gpus, s) for s in ("ddp", "fsdp", "zero3")}
    for part in ("weights", "lora", "gradients", "optimizer", "activations", "total"):
        print(f"  {part:<23}" + "".join(f"{reports[s][part]:>10.2f}" for s in reports))
    print(f"  activations: {chosen['activations_with_checkpointing']:.2f} GB with gradient checkpointing, "
          f"{chosen['activations_without_checkpointing']:.2f} GB without "
          f"(the recipe: {'with' if recipe.checkpointing else 'without'})")  # fmt: skip
    print(f"\nhours per epoch on {gpus} GPU(s) at {UTILISATION:.0%} of peak ({rows:,} rows an epoch; "
          f"{chosen['epoch_flops']:.2e} FLOPs):")  # fmt: skip
    for name in GPUS:
        fits = "fits" if GPUS[name][1] >= chosen["total"] * 1.1 else "does not fit"
        print(f"  {name:<10} {hours_per_epoch(chosen, name, gpus):8.2f} h  ({fits})")
    print(f"smallest GPU that holds it ({strategy}, {gpus} GPU(s)): {smallest_gpu(chosen['total']) or 'none listed'}")
    print(f"total per GPU: {chosen['total']:.1f} GB")
    return chosen


if __name__ == "__main__":
    main()
