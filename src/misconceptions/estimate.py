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
"""Cost on paper before launching (scripts/estimate.py): parameters, memory per GPU and hours per epoch of a recipe.

Model shapes come from the model's `config.json` (a local folder or the Hub cache), or, offline, from the shapes of the
recipes' own base models below (copied from their Hub config.json files). The counts are for Qwen2-style decoders
(the recipes' models): embeddings, per layer q/k/v (with bias), o, gate/up/down and two RMSNorms, a final norm, and
the head. Memory:
- weights by quantization: 16/32-bit; bitsandbytes nf4 (4-bit weights, one fp32 absmax per 64, the embeddings, norms
  and head unquantized); GPTQ/AWQ int4 (packed int32 weights and zeros, fp16 scales per group, GPTQ's g_idx);
- LoRA weights, their gradients and the optimizer state (fp32; AdamW 8 bytes a parameter, 8-bit optimizers 2);
- activations saved for backward per token and layer (16-bit units): the residual stream and the two RMSNorms, which
  compute in fp32 (9h), q/k/v and the attention output (3q + 4kv), the SwiGLU MLP (4 x intermediate), and per
  LoRA-wrapped layer its fp32 input/dropout output, the dropout mask and the fp32 low-rank output (measured against
  the tensors autograd saves, tests/test_estimate.py); with gradient checkpointing each layer's input (h) plus one
  layer recomputed;
- vLLM: the KV cache (2 x layers x kv heads x head dim x 2 bytes a token) for max_model_len x the batch.
DDP holds everything on every GPU; FSDP and ZeRO-3 shard weights, gradients and optimizer state over the GPUs.
Hours per epoch: 6 x (active parameters) FLOPs a trained token (2 forward + 4 backward; 8 with gradient
checkpointing's second forward) at a stated share of the GPU's dense 16-bit peak.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


GB = 1e9
# Dense 16-bit tensor throughput (TFLOP/s, no sparsity) and memory of a few GPUs, from their vendors' data sheets.
GPUS = {
    "A100-40GB": (312.0, 40),
    "A100-80GB": (312.0, 80),
    "H100-80GB": (989.0, 80),
    "L40S-48GB": (362.0, 48),
    "A10G-24GB": (125.0, 24),
    "T4-16GB": (65.0, 16),
}
UTILISATION = 0.35  # the share of peak FLOPs a LoRA fine-tune reaches (stated, not measured here)
# The recipes' base models (config.json on the Hub: huggingface.co/<id>/blob/main/config.json), for offline use.
KNOWN_SHAPES: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-Math-1.5B": {
        "vocab_size": 151936,
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "tie_word_embeddings": True,
    },
    "Qwen/Qwen2.5-32B-Instruct-GPTQ-Int4": {
        "vocab_size": 152064,
        "hidden_size": 5120,
        "intermediate_size": 27648,
        "num_hidden_layers": 64,
        "num_attention_heads": 40,
        "num_key_value_heads": 8,
        "tie_word_embeddings": False,
        "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False},
    },
    "Qwen/Qwen2.5-72B-Instruct-AWQ": {
        "vocab_size": 152064,
        "hidden_size": 8192,
        "intermediate_size": 29696,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "tie_word_embeddings": False,
        "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True},
    },
}
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class Shape:
    """A Qwen2-style decoder's sizes and, for a pre-quantized checkpoint, its quantization."""

    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    tied: bool
    quantization: dict | None = None
    head_dim: int = 0

    def __post_init__(self):
        self.head_dim = self.head_dim or self.hidden // self.heads

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Shape":
        quantization = config.get("quantization_config")
        return cls(
            vocab=config["vocab_size"],
            hidden=config["hidden_size"],
            intermediate=config["intermediate_size"],
            layers=config["num_hidden_layers"],
            heads=config["num_attention_heads"],
            kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
            tied=bool(config.get("tie_word_embeddings", False)),
            quantization=dict(quantization) if quantization else None,
            head_dim=config.get("head_dim") or 0,
        )

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one decoder layer."""
        q, kv, h, inter = self.heads * self.head_dim, self.kv_heads * self.head_dim, self.hidden, self.intermediate
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, inter),
            "up_proj": (h, inter),
            "down_proj": (inter, h),
        }


def model_shape(name_or_path: str) -> Shape:
    """The shape from config.json (local folder or Hub cache, offline), else from KNOWN_SHAPES."""
    from transformers import AutoConfig

    try:
        return Shape.from_config(AutoConfig.from_pretrained(name_or_path).to_dict())
    except (OSError, ValueError):
        if name_or_path in KNOWN_SHAPES:
            return Shape.from_config(KNOWN_SHAPES[name_or_path])
        raise


def head_parameters(shape: Shape, head: str, num_labels: int = 0) -> int:
    """`causal_lm`: the LM head (none when tied); `seq_cls`: a bias-free score layer; `none`: the bare model."""
    if head == "causal_lm":
        return 0 if shape.tied else shape.vocab * shape.hidden
    if head == "seq_cls":
        return shape.hidden * num_labels
    return 0


def count_parameters(shape: Shape, head: str = "causal_lm", num_labels: int = 0) -> int:
    """Every parameter of the model in full precision (tied embeddings counted once)."""
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    linear = sum(i * o for i, o in shape.linears().values())
    per_layer = linear + q + 2 * kv + 2 * shape.hidden  # q/k/v biases, two RMSNorms
    return (
        shape.vocab * shape.hidden + shape.layers * per_layer + shape.hidden + head_parameters(shape, head, num_labels)
    )


def lora_parameters(shape: Shape, rank: int, targets: list[str] | str | None) -> int:
    """LoRA's A and B matrices over the targeted linear layers of every decoder layer."""
    names = LINEAR_NAMES if targets in (None, "all-linear") else [t for t in targets if t in LINEAR_NAMES]
    return shape.layers * sum(rank * (i + o) for n, (i, o) in shape.linears().items() if n in names)


def weight_bytes(
    shape: Shape, dtype_bytes: int, load_in_4bit: bool, head: str = "causal_lm", num_labels: int = 0
) -> int:
    """Bytes of the model's weights as loaded: full precision, bitsandbytes nf4, or the checkpoint's GPTQ/AWQ int4."""
    total = count_parameters(shape, head, num_labels)
    rotary = shape.head_dim * 4  # the rotary embedding's inv_freq and original_inv_freq buffers, fp32
    quant = shape.quantization or {}
    method = "nf4" if load_in_4bit else quant.get("quant_method")
    if method not in ("nf4", "gptq", "awq"):
        return total * dtype_bytes + rotary
    linear_weights = shape.layers * sum(i * o for i, o in shape.linears().values())
    rest = total - linear_weights  # embeddings, biases, norms and head stay in the 16/32-bit dtype
    if method == "nf4":  # packed 4-bit, an fp32 absmax per block of 64, and each layer's 16-value fp32 code
        nf4 = linear_weights // 2 + linear_weights // 64 * 4 + shape.layers * len(LINEAR_NAMES) * 64
        return rest * dtype_bytes + nf4 + rotary
    group = quant.get("group_size", 128)
    packed = 0
    for i, o in shape.linears().values():
        packed += i * o // 2 + (i // group) * (o // 8) * 4 + (i // group) * o * 2  # qweight, qzeros, fp16 scales
        packed += i * 4 + 32 if method == "gptq" else 0  # g_idx, and gptqmodel's 8 int32 unpacking shifts
    return rest * 2 + shape.layers * packed + rotary  # GPTQ/AWQ checkpoints keep the rest in fp16


def activation_elements_per_token(shape: Shape, lora_targets: list[str] | None, rank: int, dropout: bool) -> int:
    """16-bit elements saved for backward per token and decoder layer (see the module docstring)."""
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    # the residual stream and two RMSNorms (computed in fp32), q/k/v and attention output, the SwiGLU MLP
    elements = 9 * shape.hidden + 3 * q + 4 * kv + 4 * shape.intermediate
    for name, (i, _) in shape.linears().items():
        if lora_targets and name in lora_targets:
            # PEFT keeps adapters in fp32: the input cast to fp32 (its dropout output), the 1-byte dropout mask, and
            # the low-rank output in fp32 (in 16-bit units: 2 per fp32 element, 1/2 per mask byte)
            elements += 2 * i + (i // 2 if dropout else 0) + 2 * rank
    return elements


@dataclass
class Recipe:
    """What the estimate reads from a recipe: sizes per step, precision, LoRA, optimizer."""

    model: str
    dtype_bytes: int
    load_in_4bit: bool
    head: str
    num_labels: int
    lora_rank: int
    lora_targets: list[str] | None
    lora_dropout: bool
    optimizer_bytes: int
    tokens_per_sequence: dict[str, int]  # name -> tokens of one sequence of that kind
    sequences_per_step: dict[str, int]  # name -> sequences of that kind per device step
    checkpointing: bool
    epochs: float
    rows_per_epoch: int
    gradient_accumulation: int
    vllm: dict = field(default_factory=dict)


def recipe_from_yaml(settings: dict[str, Any], rows_per_epoch: int) -> Recipe:
    """A training or generation recipe's keys, read the way the scripts read them."""
    dtype = str(settings.get("dtype") or "float32")
    dtype_bytes = 4 if dtype == "float32" else 2
    optim = str(settings.get("optim", "adamw_torch"))
    batch = int(settings.get("per_device_train_batch_size", 8))
    if "backend" in settings:  # scripts/generate_synthetic.py
        return Recipe(settings["model_name_or_path"], 2, False, "causal_lm", 0, 0, None, False, 0, {}, {}, False, 0,
                      0, 1, vllm=settings)  # fmt: skip
    if "query_max_length" in settings:  # a retriever: the batch's queries, positives and hard negatives
        tokens = {"query": settings["query_max_length"], "document": settings["document_max_length"]}
        sequences = {"query": batch, "document": batch * (1 + int(settings.get("num_negatives", 0)))}
        head = "none"
    else:
        tokens, sequences = {"sequence": int(settings.get("max_length", 512))}, {"sequence": batch}
        head = "seq_cls" if "label_target" in settings else "causal_lm"
    return Recipe(
        model=settings["model_name_or_path"],
        dtype_bytes=dtype_bytes,
        load_in_4bit=bool(settings.get("load_in_4bit")),
        head=head,
        num_labels=65 if head == "seq_cls" else 0,
        lora_rank=int(settings.get("lora_r", 16)) if settings.get("use_peft") else 0,
        lora_targets=settings.get("lora_target_modules") if settings.get("use_peft") else None,
        lora_dropout=float(settings.get("lora_dropout", 0.05)) > 0,
        optimizer_bytes=2 if "8bit" in optim else 8,
        tokens_per_sequence=tokens,
        sequences_per_step=sequences,
        checkpointing=bool(settings.get("activation_checkpointing") or settings.get("gradient_checkpointing")),
        epochs=float(settings.get("num_train_epochs", 1)),
        rows_per_epoch=rows_per_epoch,
        gradient_accumulation=int(settings.get("gradient_accumulation_steps", 1)),
    )


def estimate(recipe: Recipe, shape: Shape, num_gpus: int = 1, strategy: str = "ddp") -> dict[str, Any]:
    """Parameters, memory per GPU (GB) by part, and FLOPs per epoch, for one strategy (ddp, fsdp, zero3)."""
    shard = num_gpus if strategy in ("fsdp", "zero3") else 1
    total = count_parameters(shape, recipe.head, recipe.num_labels)
    report: dict[str, Any] = {"parameters": total, "strategy": strategy, "num_gpus": num_gpus}
    if recipe.vllm:
        tp = int(recipe.vllm.get("tensor_parallel_size", 1))
        weights = weight_bytes(shape, 2, False)
        kv_token = 2 * shape.layers * shape.kv_heads * shape.head_dim * 2
        context = int(recipe.vllm.get("max_model_len", 4096))
        report |= {
            "weights": weights / tp / GB,
            "kv_cache_per_sequence": kv_token * context / tp / GB,
            "kv_cache_token_bytes": kv_token,
            "total": weights / tp / GB,
        }
        return report
    trainable = lora_parameters(shape, recipe.lora_rank, recipe.lora_targets) if recipe.lora_rank else total
    if recipe.lora_rank and recipe.head == "seq_cls":
        trainable += shape.hidden * recipe.num_labels  # PEFT trains a copy of the score layer
    weights = weight_bytes(shape, recipe.dtype_bytes, recipe.load_in_4bit, recipe.head, recipe.num_labels)
    lora = trainable * 4 if recipe.lora_rank else 0
    gradients = trainable * 4
    optimizer = trainable * recipe.optimizer_bytes
    tokens = sum(recipe.tokens_per_sequence[k] * n for k, n in recipe.sequences_per_step.items())
    per_token = activation_elements_per_token(shape, recipe.lora_targets, recipe.lora_rank, recipe.lora_dropout)
    without = tokens * shape.layers * per_token * 2
    with_checkpointing = tokens * (shape.layers * shape.hidden + per_token) * 2
    activations = with_checkpointing if recipe.checkpointing else without
    rows_per_step = next(iter(recipe.sequences_per_step.values()))  # the batch (queries for a retriever)
    trained_tokens = tokens * recipe.rows_per_epoch / rows_per_step
    flops_per_token = (8 if recipe.checkpointing else 6) * total
    report |= {
        "trainable": trainable,
        "weights": weights / shard / GB,
        "lora": lora / shard / GB,
        "gradients": gradients / shard / GB,
        "optimizer": optimizer / shard / GB,
        "activations": activations / GB,
        "activations_without_checkpointing": without / GB,
        "activations_with_checkpointing": with_checkpointing / GB,
        "tokens_per_step": tokens,
        "epoch_flops": flops_per_token * trained_tokens,
    }
    report["total"] = sum(report[k] for k in ("weights", "lora", "gradients", "optimizer", "activations"))
    return report


def hours_per_epoch(report: dict[str, Any], gpu: str, num_gpus: int, utilisation: float = UTILISATION) -> float:
    peak, _ = GPUS[gpu]
    return report["epoch_flops"] / (peak * 1e12 * utilisation * num_gpus) / 3600


def smallest_gpu(total_gb: float) -> str | None:
    """The GPU of GPUS with the least memory that holds `total_gb` with 10% to spare."""
    fitting = [(memory, name) for name, (_, memory) in GPUS.items() if memory >= total_gb * 1.1]
    return min(fitting)[1] if fitting else None


def known_shape_source(name: str) -> str:
    return f"huggingface.co/{name}/blob/main/config.json" if name in KNOWN_SHAPES else str(Path(name))
