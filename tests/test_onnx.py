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
"""The ONNX Runtime backends: a tiny trained classifier and the packaged retriever exported, close to torch, cached,
reused and rebuilt; unsupported models fall back to torch with one warning line; the scripts' --backend flag."""

import importlib.util
import json
import logging
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from misconceptions import (
    InputError,
    load_classifier,
    load_retriever,
    map_at_k,
    onnx_backend,
    onnx_export,
    rank_dataframe,
    read_map_csv,
    resolve_model_path,
    texts_for,
)
from misconceptions.onnx_backend import OnnxSentenceEncoder, resolve_backend
from misconceptions.onnx_export import onnx_cache_folder

from .conftest import REPO, run_script


@pytest.fixture(scope="module", autouse=True)
def _own_cache(tmp_path_factory):
    """The packaged retriever lives inside the venv: its exports go to a fresh cache, shared by this module's tests
    and the scripts they run."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MISCONCEPTIONS_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def classifier_dir(minilm_classifier, tmp_path_factory):
    """This module's copy of the shared tiny classifier (tests/conftest.py), without any ONNX export yet."""
    out = tmp_path_factory.mktemp("onnx_runs") / "minilm"
    shutil.copytree(minilm_classifier, out, ignore=shutil.ignore_patterns(".onnx", "runs", "checkpoint-*"))
    return out


@pytest.fixture
def classifier_copy(classifier_dir, tmp_path):
    """A private copy, for tests that change the model or its cache."""
    copy = tmp_path / "model"
    shutil.copytree(classifier_dir, copy, ignore=shutil.ignore_patterns(".onnx"))
    return copy


@pytest.fixture(scope="module")
def validation_df(small_map_dataset) -> pd.DataFrame:
    return read_map_csv(str(small_map_dataset / "validation.csv"), require_labels=False)


def test_resolve_backend(monkeypatch):
    assert resolve_backend("auto") == resolve_backend(None) == onnx_backend.CPU_DEFAULTS["classifier"]
    assert resolve_backend("auto", task="retriever") == onnx_backend.CPU_DEFAULTS["retriever"]
    assert resolve_backend("onnx") == "onnx"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_backend("auto") == "torch"
    with pytest.raises(InputError, match="unknown inference backend 'tensorrt'.*auto, torch, onnx, onnx-int8"):
        resolve_backend("tensorrt")


def test_classifier_onnx_matches_torch_and_is_cached(classifier_dir, validation_df):
    torch_clf = load_classifier(str(classifier_dir))
    texts = texts_for(validation_df, torch_clf.settings.text_template)
    ref = torch_clf.predict_probs(texts, batch_size=8)
    ref_ranked = rank_dataframe(torch_clf, validation_df)
    for backend, atol in (("onnx", 1e-5), ("onnx-int8", 0.02)):
        clf = load_classifier(str(classifier_dir), backend=backend)
        assert clf.backend == backend and clf.onnx is not None
        probs = clf.predict_probs(texts, batch_size=8)  # several length-sorted batches, order restored
        np.testing.assert_allclose(probs, ref, atol=atol)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        assert (probs.argmax(axis=1) == ref.argmax(axis=1)).mean() >= 0.9
        ranked = rank_dataframe(clf, validation_df)
        if backend == "onnx":
            assert ranked == ref_ranked
        else:  # the TF-IDF blend and the label ranking are unchanged; int8 may swap near-ties only
            assert np.mean([r[0] == s[0] for r, s in zip(ranked, ref_ranked, strict=True)]) >= 0.9
    folder = classifier_dir / ".onnx"
    assert onnx_cache_folder(classifier_dir) == folder
    assert {p.name for p in folder.glob("*.onnx")} == {"model.onnx", "model.int8.onnx"}
    assert json.loads((folder / "export.json").read_text())["opset"] >= 17


def test_cache_reused_then_rebuilt_when_weights_change(classifier_copy, validation_df, monkeypatch):
    exports = []
    real_export = onnx_export._export
    monkeypatch.setattr(onnx_export, "_export", lambda *a, **k: exports.append(1) or real_export(*a, **k))
    first_clf = load_classifier(str(classifier_copy), backend="onnx")
    texts = texts_for(validation_df, first_clf.settings.text_template)
    first = first_clf.predict_probs(texts)
    onnx_file = classifier_copy / ".onnx" / "model.onnx"
    stamp = onnx_file.stat().st_mtime_ns
    again = load_classifier(str(classifier_copy), backend="onnx").predict_probs(texts)
    assert len(exports) == 1 and onnx_file.stat().st_mtime_ns == stamp  # reused, not exported again
    np.testing.assert_array_equal(again, first)
    weights = load_file(str(classifier_copy / "model.safetensors"))
    head = next(k for k in weights if k.endswith("classifier.bias"))
    weights[head] = weights[head] + torch.linspace(-2, 2, weights[head].numel())
    save_file(weights, str(classifier_copy / "model.safetensors"), metadata={"format": "pt"})
    changed = load_classifier(str(classifier_copy), backend="onnx")
    assert len(exports) == 2 and onnx_file.stat().st_mtime_ns != stamp  # rebuilt
    probs = changed.predict_probs(texts)
    assert np.abs(probs - first).max() > 0.01
    np.testing.assert_allclose(probs, load_classifier(str(classifier_copy)).predict_probs(texts), atol=1e-5)


def _onnx_ops(path) -> list[str]:
    import onnx

    return [node.op_type for node in onnx.load(str(path)).graph.node]


def _fp32_weight_matmuls(path) -> list[str]:
    """The MatMul nodes left in fp32 whose second input is a weight (an initializer)."""
    import onnx

    graph = onnx.load(str(path)).graph
    weights = {init.name for init in graph.initializer}
    return [node.name for node in graph.node if node.op_type == "MatMul" and node.input[1] in weights]


def test_export_is_eager_and_int8_quantizes_every_weight_matmul(classifier_dir):
    """The graph is traced with eager attention (SDPA's mask exports as IsNaN/Where on every score) and the model
    keeps its own attention afterwards; the int8 graphs (classifier and embeddings) quantize every weight MatMul."""
    clf = load_classifier(str(classifier_dir), backend="onnx-int8")
    assert clf.model.config._attn_implementation == "sdpa"
    folder = classifier_dir / ".onnx"
    assert "IsNaN" not in _onnx_ops(folder / "model.onnx")
    assert len(_fp32_weight_matmuls(folder / "model.onnx")) == 6 * 6  # q, k, v, o, up, down in each layer
    assert _fp32_weight_matmuls(folder / "model.int8.onnx") == []
    model_dir = str(resolve_model_path("builtin:all-MiniLM-L6-v2"))
    encoder, _ = load_retriever(model_dir, backend="onnx-int8")
    assert encoder[0].auto_model.config._attn_implementation == "sdpa"
    encoder_folder = onnx_cache_folder(model_dir)
    assert len(_fp32_weight_matmuls(encoder_folder / "model.onnx")) == 6 * 6
    assert _fp32_weight_matmuls(encoder_folder / "model.int8.onnx") == []
    stored = json.loads((folder / "export.json").read_text())
    assert stored["quantization"] == onnx_export.quantization_settings()


def test_int8_is_redone_when_the_cpu_changes(classifier_copy, monkeypatch):
    """7-bit weights without VNNI, 8-bit with it: a model folder moved to another CPU is quantized again."""
    quantized = []
    real_quantize = onnx_export._quantize
    monkeypatch.setattr(
        onnx_export, "_quantize", lambda *a: quantized.append(a[2]["reduce_range"]) or real_quantize(*a)
    )
    for vnni in (False, False, True):
        monkeypatch.setattr(onnx_export, "cpu_has_vnni", lambda vnni=vnni: vnni)
        load_classifier(str(classifier_copy), backend="onnx-int8")
    assert quantized == [True, False]  # reused on the same CPU, redone with full-range weights on a VNNI one
    stored = json.loads((classifier_copy / ".onnx" / "export.json").read_text())
    assert stored["quantization"]["reduce_range"] is False


def test_retriever_onnx_matches_torch():
    model_dir = str(resolve_model_path("builtin:all-MiniLM-L6-v2"))
    mapping = pd.read_csv(REPO.parent / "shared" / "data" / "eedi" / "misconception_mapping.csv")
    documents = mapping["MisconceptionName"].head(300).tolist()
    queries = [f"A student who thinks: {d.lower()}" for d in mapping["MisconceptionName"].sample(60, random_state=0)]
    torch_model, _ = load_retriever(model_dir)
    ref_q = torch_model.encode_query(queries, batch_size=16, normalize_embeddings=True)
    ref_d = torch_model.encode_document(documents, batch_size=64, normalize_embeddings=True)
    for backend, atol, min_cos in (("onnx", 1e-5, 0.9999), ("onnx-int8", 0.05, 0.97)):
        model, _ = load_retriever(model_dir, backend=backend)
        assert isinstance(model, OnnxSentenceEncoder) and model.backend == backend
        assert model.prompts == torch_model.prompts  # everything else is the SentenceTransformer's
        q = model.encode_query(queries, batch_size=16, normalize_embeddings=True)
        d = model.encode_document(documents, batch_size=64, normalize_embeddings=True)
        np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(q, ref_q, atol=atol)
        assert (q * ref_q).sum(axis=1).min() >= min_cos
        # Documents run in fp32 on both ONNX backends (int8 queries against fp32 documents, see OnnxSentenceEncoder)
        np.testing.assert_allclose(d, ref_d, atol=1e-5)
        assert model.document_backend == "onnx" and model.document_session.path.name == "model.onnx"
        assert model.query_session.path.name == ("model.int8.onnx" if backend == "onnx-int8" else "model.onnx")
        ref_top = (ref_q @ ref_d.T).argmax(axis=1)
        if backend == "onnx":
            assert ((q @ d.T).argmax(axis=1) == ref_top).all()
        else:  # near-duplicate descriptions swap places: torch's best stays in the top 3 (top-1 agreement ~0.9)
            top3 = np.argsort(-(q @ d.T), axis=1)[:, :3]
            assert np.mean([best in row for best, row in zip(ref_top, top3, strict=True)]) >= 0.95
    # Packaged models are not written into the installation: their exports go to the cache folder.
    folder = onnx_cache_folder(model_dir)
    assert folder.is_relative_to(os.environ["MISCONCEPTIONS_CACHE"]) and (folder / "model.int8.onnx").is_file()


def test_both_onnx_backends_share_the_document_cache(tmp_path):
    """onnx-int8 documents are the fp32 ONNX ones: one cache entry for both ONNX backends, another for torch."""
    from misconceptions.retrieval import cached_document_embeddings

    model_dir = str(resolve_model_path("builtin:all-MiniLM-L6-v2"))
    source = tmp_path / "misconceptions.csv"
    texts = [f"Believes {n} is prime" for n in range(20)]
    pd.DataFrame({"MisconceptionId": range(20), "MisconceptionName": texts}).to_csv(source, index=False)
    cache = tmp_path / "cache"
    results = {}
    for backend in ("onnx", "onnx-int8", "torch"):
        model, _ = load_retriever(model_dir, backend=backend)
        results[backend] = cached_document_embeddings(model, model_dir, texts, source, cache_folder=cache)
    assert [cached for _, cached in results.values()] == [False, True, False]
    np.testing.assert_array_equal(results["onnx"][0], results["onnx-int8"][0])
    assert len(list(cache.glob("*.npy"))) == 2


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "onnx" in r.name]


def test_unsupported_retriever_falls_back_with_one_warning(tmp_path, caplog):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    base = str(resolve_model_path("builtin:all-MiniLM-L6-v2"))
    transformer = Transformer(base)
    SentenceTransformer(modules=[transformer, Pooling(384, pooling_mode="lasttoken")]).save(str(tmp_path / "lt"))
    with caplog.at_level(logging.INFO):
        model, _ = load_retriever(str(tmp_path / "lt"), backend="onnx-int8")
    assert isinstance(model, SentenceTransformer)
    (message,) = _warnings(caplog)
    assert "\n" not in message and "lasttoken" in message and message.endswith("using torch")
    assert not (tmp_path / "lt" / ".onnx").exists()


def test_failed_export_falls_back_with_one_warning(classifier_copy, validation_df, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::magic' to ONNX opset version 17 is not supported.\nmore")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with caplog.at_level(logging.INFO):
        clf = load_classifier(str(classifier_copy), backend="onnx")
    assert clf.backend == "torch" and clf.onnx is None
    (message,) = _warnings(caplog)
    assert message.endswith("is not supported.); using torch")
    assert len(rank_dataframe(clf, validation_df)) == len(validation_df)  # torch still predicts
    with pytest.raises(InputError, match="unknown inference backend"):
        load_classifier(str(classifier_copy), backend="int4")


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scripts_backend_flag(classifier_dir, small_map_dataset, validation_df, eedi_data, tmp_path, capsys):
    val = small_map_dataset / "validation.csv"
    required = ["--model", "m", "--input_csv", "i", "--output_csv", "o", "--misconceptions_csv", "c"]
    eedi_required = ["--retriever", "r", "--reranker", "k", *required[2:]]
    for name in ("predict_classifier", "retrieve", "predict_eedi"):
        argv = {"retrieve": required, "predict_eedi": eedi_required}.get(name, required[:6])
        assert _script(name).parse_args(argv).backend == "auto"
        with pytest.raises(SystemExit):
            _script(name).parse_args(["--backend", "tensorrt"])
        assert "invalid choice: 'tensorrt'" in capsys.readouterr().err
    proc = run_script(
        "scripts/predict_classifier.py",
        *("--model", str(classifier_dir), "--input_csv", str(val), "--output_csv", str(tmp_path / "auto.csv")),
    )
    assert f"rows/s, backend {onnx_backend.CPU_DEFAULTS['classifier']})" in proc.stderr
    auto = json.loads((tmp_path / "auto_metrics.json").read_text())["map@3"]
    torch_map = map_at_k(
        validation_df["label"].tolist(), rank_dataframe(load_classifier(str(classifier_dir)), validation_df)
    )
    assert auto == pytest.approx(torch_map, abs=0.05)  # 30 rows: one swapped rank moves MAP@3 by ~0.01
    train_csv, mapping_csv = eedi_data["train_csv"], eedi_data["mapping_csv"]
    proc = run_script(
        "scripts/retrieve.py",
        *("--model", "builtin:all-MiniLM-L6-v2", "--input_csv", str(train_csv)),
        *("--misconceptions_csv", str(mapping_csv), "--output_csv", str(tmp_path / "eedi.csv")),
        *("--backend", "onnx", "--cache_dir", str(tmp_path / "emb")),
    )
    assert "backend onnx)" in proc.stdout
    assert len(pd.read_csv(tmp_path / "eedi.csv")) > 0
