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
"""ONNX export of a model folder: the graph, its check against torch, dynamic int8 quantization, the on-disk cache,
and the ONNX Runtime session that runs it.

Why not optimum: `optimum-onnx`, the only optimum ONNX exporter, requires transformers<4.58, and
sentence-transformers' own ONNX backend goes through it; this toolkit runs transformers 5.23. So the encoder is
exported here with `torch.onnx.export` (the TorchScript exporter, `dynamo=False`: a few seconds for a BERT where the
dynamo exporter takes about a minute, with the same outputs) with eager attention, checked against torch on padded
batches of another shape, and quantized with `onnxruntime.quantization.quantize_dynamic`.

The exported files are cached beside the model in `<model>/.onnx/` (in `$MISCONCEPTIONS_CACHE/onnx/` when the folder
is not writable or lies inside the Python installation, as the packaged models do), keyed by the files that define
the graph (weights and configs: path, size and mtime), the exporter and quantization settings (which depend on the
CPU); a changed model is exported again. A model whose export cannot match torch raises `UnsupportedModel`.
onnxruntime is imported only where a graph is quantized or run: it is an optional dependency of inference.
"""

import functools
import hashlib
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock

from .model_utils import cache_dir


logger = logging.getLogger(__name__)

OPSET = 17
EXPORT_FORMAT = 3  # bump when the export or quantization settings change: every cache is rebuilt
# Dynamic int8, chosen on the demo models (bench/int8_variants.py): every weight MatMul, weights per output channel.
# The classifier's MAP@3 moves by at most 0.0005 at any batch size. The retriever's int8 queries against fp32
# documents move MAP@25 by -0.0020 to +0.0023 over 8 batch sizes (int8 documents too: as low as -0.0065; keeping the
# feed-forward down-projections in fp32 is slower and, against fp32 documents, lower: down to -0.0032).
QUANTIZATION = {"weight_type": "QInt8", "per_channel": True, "op_types": ["MatMul"]}
# 7-bit weights (`reduce_range`) unless the CPU has an int8 dot product that accumulates in 32 bits (VNNI, AMX):
# without one, ONNX Runtime's u8 x s8 kernels sum pairs of products in 16 bits, which full-range weights overflow.
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
VERIFY_ATOL = 1e-3  # the exported fp32 graph against torch, on a padded batch of another shape
GRAPH_FILES = ("config.json", "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
PROBE_TEXTS = [
    "3/4 | Because the shaded part is three out of four equal parts of the shape.",
    "x",
    "The answer is 0.5 since half of one is a half, so it is the same as 1/2.",
]


class UnsupportedModel(Exception):
    """This model cannot run on ONNX Runtime with the same outputs as torch."""


def num_threads() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@functools.cache
def cpu_has_vnni() -> bool:
    """Whether the CPU has a 32-bit-accumulating int8 dot product (/proc/cpuinfo flags; False where unknown)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return bool(set(line.split(":", 1)[1].split()) & set(VNNI_FLAGS))
    except OSError:
        pass
    return False


def quantization_settings() -> dict[str, Any]:
    """The int8 settings on this CPU."""
    return {**QUANTIZATION, "reduce_range": not cpu_has_vnni()}


# ---------------------------------------------------------------------------------------------------------- cache


def onnx_cache_folder(model_dir: str | os.PathLike) -> Path:
    """`<model>/.onnx` when the model folder is writable and not part of the Python installation, else
    `$MISCONCEPTIONS_CACHE/onnx/<hash of the folder's path>`."""
    root = Path(model_dir).resolve()
    installed = any(root.is_relative_to(Path(p).resolve()) for p in {sys.prefix, sys.base_prefix})
    if not installed and os.access(root, os.W_OK):
        return root / ".onnx"
    return cache_dir() / "onnx" / hashlib.sha256(str(root).encode()).hexdigest()[:16]


def export_key(model_dir: str | os.PathLike, kind: str) -> str:
    """Identity of an export: the graph-defining files (weights and configs: path, size, mtime) and the settings."""
    root = Path(model_dir).resolve()
    files = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0].startswith(("checkpoint-", ".")) or not path.is_file():
            continue
        if path.suffix == ".safetensors" or path.name in GRAPH_FILES:
            stat = path.stat()
            files.append([str(relative), stat.st_size, stat.st_mtime_ns])
    if not any(name.endswith(".safetensors") for name, _, _ in files):
        raise UnsupportedModel("no .safetensors weights in the model folder")
    import onnxruntime

    settings = [kind, EXPORT_FORMAT, OPSET, quantization_settings(), torch.__version__, onnxruntime.__version__]
    return hashlib.sha256(json.dumps([files, settings]).encode()).hexdigest()


class _OutputOf(torch.nn.Module):
    """Positional tensors in (the ONNX inputs), one named output of the wrapped model out."""

    def __init__(self, model: torch.nn.Module, input_names: list[str], output: str):
        super().__init__()
        self.model, self.input_names, self.output = model, input_names, output

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return getattr(self.model(**dict(zip(self.input_names, tensors, strict=True))), self.output)


def _export(
    model: torch.nn.Module, tokenizer, input_names: list[str], output: str, path: Path, eager_attention: bool = True
) -> None:
    """torch.onnx.export (TorchScript exporter) with dynamic batch and sequence axes, checked against torch.

    The graph is traced with eager attention (restored afterwards): SDPA exports its padding mask as Where/IsNaN
    nodes on every attention score, a tenth or more of the int8 run time (bench/int8_variants.py).
    """
    sample = tokenizer(PROBE_TEXTS[:2], padding=True, return_tensors="pt")
    wrapper = _OutputOf(model, input_names, output)
    was_training = model.training
    attention = getattr(model.config, "_attn_implementation", None)
    try:
        if eager_attention and attention not in (None, "eager") and hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("eager")
        wrapper.eval()  # the exporter restores the wrapper's mode afterwards: it must be eval too
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                tuple(sample[name] for name in input_names),
                str(path),
                input_names=input_names,
                output_names=["output"],
                opset_version=OPSET,
                dynamo=False,
                dynamic_axes={n: {0: "batch", 1: "sequence"} for n in input_names}
                | {"output": {0: "batch", 1: "sequence"} if output == "last_hidden_state" else {0: "batch"}},
            )
        probe = tokenizer(PROBE_TEXTS[::-1] + PROBE_TEXTS, padding=True, return_tensors="pt")
        with torch.no_grad():
            expected = wrapper(*(probe[name] for name in input_names)).float().numpy()
    finally:
        model.train(was_training)
        if getattr(model.config, "_attn_implementation", None) != attention:
            model.set_attn_implementation(attention)
    got = OnnxSession(path, input_names).run({name: probe[name].numpy() for name in input_names})
    if got.ndim == 3:  # token embeddings: padding positions are not compared (pooling never reads them)
        mask = probe["attention_mask"].numpy()[..., None].astype(bool)
        got, expected = got * mask, expected * mask
    diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
    if not diff <= VERIFY_ATOL:
        raise UnsupportedModel(f"the exported graph differs from torch by {diff:.2g} (> {VERIFY_ATOL})")


def _quantize(source: Path, target: Path, settings: dict[str, Any], nodes_to_exclude: list[str] | None = None) -> None:
    """Dynamic int8 (`quantization_settings`): MatMul weights per output channel, activations quantized per batch at
    run time; `nodes_to_exclude` stay fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # the quantizer logs every tensor it skips on the root logger
    try:
        quantize_dynamic(
            source,
            target,
            weight_type=getattr(QuantType, settings["weight_type"]),
            per_channel=settings["per_channel"],
            reduce_range=settings["reduce_range"],
            op_types_to_quantize=settings["op_types"],
            nodes_to_exclude=nodes_to_exclude or [],
        )
    finally:
        root.setLevel(level)


def exported_model(
    model: torch.nn.Module,
    tokenizer,
    model_dir: str | os.PathLike,
    kind: str,
    input_names: list[str],
    output: str,
    int8: bool,
) -> Path:
    """The cached ONNX file of a model folder (fp32 or int8), exported and quantized first when missing or stale."""
    folder = onnx_cache_folder(model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    key = export_key(model_dir, kind)
    fp32, quantized, info = folder / "model.onnx", folder / "model.int8.onnx", folder / "export.json"
    with FileLock(str(folder / ".lock")):
        for leftover in folder.glob("*.tmp"):  # a killed export: never half-written files under the final names
            leftover.unlink(missing_ok=True)
        stored = json.loads(info.read_text()) if info.is_file() else {}
        if stored.get("key") != key or not fp32.is_file():
            for stale in (info, fp32, quantized):
                stale.unlink(missing_ok=True)
            logger.info("Exporting %s to ONNX in %s", model_dir, folder)
            tmp = folder / "model.onnx.tmp"
            _export(model, tokenizer, input_names, output, tmp)
            os.replace(tmp, fp32)
            settings = {"opset": OPSET, "exporter": "torch.onnx.export(dynamo=False), eager attention"}
            stored = {"key": key, "kind": kind, "input_names": input_names, **settings}
            stored["quantization"] = quantization_settings()
            info.write_text(json.dumps(stored, indent=2))
        if int8 and not quantized.is_file():
            logger.info("Quantizing %s to int8", fp32)
            tmp = folder / "model.int8.onnx.tmp"
            _quantize(fp32, tmp, quantization_settings())
            os.replace(tmp, quantized)
    return quantized if int8 else fp32


class OnnxSession:
    """An ONNX Runtime CPU session: every graph optimization on, one intra-op thread per core."""

    def __init__(self, path: str | os.PathLike, input_names: list[str], threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only
        self.path = Path(path)
        self.input_names = input_names
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {name: np.ascontiguousarray(batch[name], dtype=np.int64) for name in self.input_names}
        return self.session.run(None, feeds)[0]
