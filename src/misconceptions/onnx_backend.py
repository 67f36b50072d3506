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
"""Fast CPU inference: the classifier and the retriever on ONNX Runtime, in fp32 or dynamic int8.

Backends: `torch` (the PyTorch model), `onnx` (the exported graph, fp32), `onnx-int8` (its MatMul weights quantized
to int8 per output channel, activations quantized on the fly per batch, see `onnx_export.QUANTIZATION`; a retriever encodes
queries in int8 and its documents in fp32, see `OnnxSentenceEncoder`) and `auto`: torch on a GPU, else
`CPU_DEFAULTS[task]`, the fastest backend within 0.002 MAP@3 (classifier) or MAP@25 (retriever) of torch in
bench/inference_speed.py (see bench/RESULTS.md). int8 is several times faster on CPUs with VNNI (AVX-512 VNNI,
AVX-VNNI, AMX) than on AVX2 alone.

What cannot be reproduced exactly (a PEFT adapter, a 4-bit or half-precision model, pooling other than mean/cls/max,
extra modules after pooling, a failed export) falls back to torch with a one-line warning. The export, its cache
and int8 quantization are in `onnx_export`.

Inference tokenizes every text once (fast tokenizer), sorts by length, pads each batch only to its longest row, and
restores the input order. Classifier: logits -> softmax, as `classifier.predict_probs`. Retriever: the token
embeddings pooled and normalized as the SentenceTransformer's own Pooling/Normalize modules configure.
"""

import functools
import logging
import os
from typing import Any

import numpy as np
import torch

from .errors import InputError
from .onnx_export import PROBE_TEXTS, OnnxSession, UnsupportedModel, exported_model


logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
# bench/inference_speed.py and bench/int8_variants.py (bench/RESULTS.md): the fastest backend that loses at most 0.002
# MAP@3 (classifier) / MAP@25 (retriever) against torch at every batch size measured.
CPU_DEFAULTS = {"classifier": "onnx-int8", "retriever": "onnx-int8"}
POOLING_MODES = ("mean", "cls", "max")


def resolve_backend(backend: str | None, task: str = "classifier") -> str:
    """`auto` -> torch on a GPU, else `CPU_DEFAULTS[task]` (task: classifier or retriever); any other name must be one
    of `BACKENDS`."""
    backend = backend or "auto"
    if backend not in BACKENDS:
        raise InputError(f"unknown inference backend '{backend}'; expected one of: {', '.join(BACKENDS)}")
    if backend == "auto":
        return "torch" if torch.cuda.is_available() else CPU_DEFAULTS[task]
    return backend


def warn_fallback(model_dir: str | os.PathLike, backend: str, reason: Exception | str) -> None:
    """The one-line warning of a model that runs on torch instead of the asked ONNX backend."""
    reason = (str(reason).strip().splitlines() or ["unknown reason"])[0][:300]
    logger.warning("%s: backend %s unavailable (%s); using torch", model_dir, backend, reason)


def model_input_names(tokenizer, model: torch.nn.Module) -> list[str]:
    """The tokenizer's outputs that the model's forward takes (e.g. input_ids, token_type_ids, attention_mask)."""
    import inspect

    accepted = inspect.signature(model.forward).parameters
    names = [name for name in tokenizer.model_input_names if name in accepted]
    if "input_ids" not in names or "attention_mask" not in names:
        raise UnsupportedModel(f"a text encoder taking input_ids and attention_mask is needed, got {names}")
    extra = sorted(set(names) - {"input_ids", "attention_mask", "token_type_ids"})
    if extra:
        raise UnsupportedModel(f"model inputs {extra}")
    return names


def length_sorted_batches(
    input_ids: list[list[int]], input_names: list[str], pad_id: int, batch_size: int, left: bool
):
    """(row indices, padded int64 arrays) per batch of rows of similar length; each batch is padded to its longest.

    Only the token ids come from the tokenizer: the attention mask follows from the lengths, and token type ids are
    zeros (single texts), which saves converting two more lists per row.
    """
    lengths = np.fromiter((len(e) for e in input_ids), dtype=np.int64, count=len(input_ids))
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = int(lengths[idx].max())
        ids = np.full((len(idx), width), pad_id, dtype=np.int64)
        for r, i in enumerate(idx):
            row = input_ids[i]
            if left:
                ids[r, width - len(row) :] = row
            else:
                ids[r, : len(row)] = row
        positions = np.arange(width)[None, :]
        if left:
            mask = positions >= (width - lengths[idx])[:, None]
        else:
            mask = positions < lengths[idx][:, None]
        batch = {"input_ids": ids, "attention_mask": mask.astype(np.int64)}
        if "token_type_ids" in input_names:
            batch["token_type_ids"] = np.zeros_like(ids)
        yield idx, batch


def _tokenize(tokenizer, texts: list[str], max_length: int | None) -> list[list[int]]:
    """Token ids of every text, in one call of the fast tokenizer."""
    encoded = tokenizer(
        list(texts), truncation=True, max_length=max_length, return_attention_mask=False, return_token_type_ids=False
    )
    return encoded["input_ids"]


def _check_plain_model(model: torch.nn.Module) -> None:
    if hasattr(model, "peft_config"):
        raise UnsupportedModel("a PEFT adapter (merge it into the base model to export)")
    if getattr(model.config, "quantization_config", None) is not None:
        raise UnsupportedModel("a quantized (bitsandbytes) model")
    dtype = next(model.parameters()).dtype
    if dtype != torch.float32:
        raise UnsupportedModel(f"weights in {dtype}, not float32")


class OnnxClassifier:
    """Sequence-classification probabilities from an exported classifier, as `classifier.predict_probs`."""

    def __init__(self, model: torch.nn.Module, tokenizer, model_dir: str | os.PathLike, backend: str):
        if backend not in ("onnx", "onnx-int8"):
            raise ValueError(backend)
        _check_plain_model(model)
        if not getattr(tokenizer, "is_fast", False):
            raise UnsupportedModel("no fast tokenizer")
        self.backend, self.tokenizer, self.num_labels = backend, tokenizer, model.config.num_labels
        self.input_names = model_input_names(tokenizer, model)
        path = exported_model(
            model, tokenizer, model_dir, "classifier", self.input_names, "logits", int8=backend == "onnx-int8"
        )
        self.session = OnnxSession(path, self.input_names)

    def predict_probs(self, texts: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
        """Softmax probabilities for texts, in input order."""
        if not len(texts):
            return np.zeros((0, self.num_labels), dtype=np.float32)
        input_ids = _tokenize(self.tokenizer, texts, max_length)
        out = np.zeros((len(texts), self.num_labels), dtype=np.float32)
        left = self.tokenizer.padding_side == "left"
        pad_id = self.tokenizer.pad_token_id or 0
        for idx, batch in length_sorted_batches(input_ids, self.input_names, pad_id, batch_size, left):
            logits = self.session.run(batch).astype(np.float32)
            logits -= logits.max(axis=1, keepdims=True)
            np.exp(logits, out=logits)
            out[idx] = logits / logits.sum(axis=1, keepdims=True)
        return out


def load_onnx_classifier(model, tokenizer, model_dir: str | os.PathLike, backend: str) -> OnnxClassifier | None:
    """An OnnxClassifier for an ONNX backend, or None (with the one-line warning) when only torch can run it."""
    try:
        return OnnxClassifier(model, tokenizer, model_dir, backend)
    except Exception as err:  # noqa: BLE001 (any export, quantization or session failure: torch still works)
        warn_fallback(model_dir, backend, err)
        return None


class OnnxSentenceEncoder:
    """A SentenceTransformer's `encode_query` / `encode_document` on ONNX Runtime, same embeddings.

    With `onnx-int8`, queries (and `encode`) run through the int8 graph and documents through the fp32 one: documents
    are encoded once and cached (`retrieval.cached_document_embeddings`), queries on every request, and int8 on both
    sides compounds the error (bench/int8_variants.py: MAP@25 as low as -0.0065, against -0.0020 to +0.0023 with fp32
    documents). `document_backend` names what the documents run on.

    Supports a Transformer module, then Pooling (mean, cls or max over every token, prompt included), then an
    optional Normalize, as read from the loaded model's modules (its modules.json and pooling config). Any other
    attribute is the wrapped SentenceTransformer's, so code that reads `prompts` or `model[0]` keeps working.
    """

    document_backend = "onnx"  # both ONNX backends encode documents in fp32

    def __init__(self, model, model_dir: str | os.PathLike, backend: str):
        from sentence_transformers.base.modules import Transformer
        from sentence_transformers.base.modules.normalize import Normalize
        from sentence_transformers.sentence_transformer.modules import Pooling

        if backend not in ("onnx", "onnx-int8"):
            raise ValueError(backend)
        modules = list(model)
        if not modules or not isinstance(modules[0], Transformer):
            raise UnsupportedModel("the first module is not a Transformer")
        if len(modules) < 2 or not isinstance(modules[1], Pooling):
            raise UnsupportedModel("the second module is not a Pooling")
        extra = [type(m).__name__ for m in modules[2:] if not isinstance(m, Normalize)]
        if extra:
            raise UnsupportedModel(f"modules after pooling: {', '.join(extra)}")
        transformer, pooling = modules[0], modules[1]
        if pooling.pooling_mode not in POOLING_MODES:
            raise UnsupportedModel(f"pooling mode {pooling.pooling_mode!r} (supported: {', '.join(POOLING_MODES)})")
        if not pooling.include_prompt:
            raise UnsupportedModel("pooling that excludes the prompt")
        if getattr(transformer, "transformer_task", "feature-extraction") != "feature-extraction":
            raise UnsupportedModel(f"transformer task {transformer.transformer_task}")
        if getattr(transformer, "query_expansion", None) is not None:
            raise UnsupportedModel("query expansion")
        tokenizer = transformer.tokenizer
        if not getattr(tokenizer, "is_fast", False):
            raise UnsupportedModel("no fast tokenizer")
        auto_model = transformer.auto_model
        _check_plain_model(auto_model)
        self.model, self.backend, self.tokenizer, self.pooling = model, backend, tokenizer, pooling.pooling_mode
        self.input_names = model_input_names(tokenizer, auto_model)
        for task in ("query", "document"):  # the same token ids as the SentenceTransformer's own preprocessing
            ours = _tokenize(tokenizer, self._prompted(PROBE_TEXTS, task), self._max_length(task))
            theirs = model.preprocess(PROBE_TEXTS, prompt=self._prompt(task) or None, task=task)
            mask = theirs["attention_mask"].bool()
            if [row[m].tolist() for row, m in zip(theirs["input_ids"], mask, strict=True)] != ours:
                raise UnsupportedModel(f"{task} tokenization differs from the SentenceTransformer's")
        export = functools.partial(
            exported_model, auto_model, tokenizer, model_dir, "embedding", self.input_names, "last_hidden_state"
        )
        self.document_path = export(int8=False)
        query_path = export(int8=True) if backend == "onnx-int8" else self.document_path
        self.query_session = OnnxSession(query_path, self.input_names)
        self._document_session = self.query_session if query_path == self.document_path else None

    @property
    def document_session(self) -> OnnxSession:
        """The fp32 session documents run on: the query session unless int8, else opened on first use."""
        if self._document_session is None:
            self._document_session = OnnxSession(self.document_path, self.input_names)
        return self._document_session

    def __getattr__(self, name: str) -> Any:
        model = self.__dict__.get("model")
        if model is None:
            raise AttributeError(name)
        return getattr(model, name)

    def __getitem__(self, index):
        return self.model[index]

    def __iter__(self):
        return iter(self.model)

    def _prompt(self, task: str | None) -> str:
        prompts = self.model.prompts
        if task in prompts:
            return prompts[task] or ""
        default = getattr(self.model, "default_prompt_name", None)
        return prompts.get(default, "") if default else ""

    def _prompted(self, texts: list[str], task: str | None) -> list[str]:
        prompt = self._prompt(task)
        return [prompt + t for t in texts] if prompt else list(texts)

    def _max_length(self, task: str | None) -> int | None:
        module = self.model[0]
        length = {"query": module.query_length, "document": module.document_length}.get(task)
        return length or module.max_seq_length

    def _encode(self, texts: list[str], task: str | None, batch_size: int, normalize: bool) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return np.zeros((0, self.model[0].get_embedding_dimension()), dtype=np.float32)
        input_ids = _tokenize(self.tokenizer, self._prompted(texts, task), self._max_length(task))
        session = self.document_session if task == "document" else self.query_session
        out = None
        left = self.tokenizer.padding_side == "left"
        pad_id = self.tokenizer.pad_token_id or 0
        for idx, batch in length_sorted_batches(input_ids, self.input_names, pad_id, batch_size, left):
            tokens = session.run(batch).astype(np.float32)
            mask = batch["attention_mask"][..., None].astype(np.float32)
            if self.pooling == "mean":
                pooled = (tokens * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            elif self.pooling == "max":
                pooled = np.where(mask > 0, tokens, -1e9).max(axis=1)
            else:  # cls: the first attended token
                pooled = tokens[np.arange(len(idx)), batch["attention_mask"].argmax(axis=1)]
            if out is None:
                out = np.zeros((len(texts), pooled.shape[1]), dtype=np.float32)
            out[idx] = pooled
        if normalize or any(type(m).__name__ == "Normalize" for m in list(self.model)[2:]):
            out /= np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)
        return out

    def encode_query(
        self, inputs, batch_size: int = 32, normalize_embeddings: bool = False, **kwargs: Any
    ) -> np.ndarray:
        """Query embeddings (the model's "query" prompt, query_length), as numpy."""
        return self._encode(inputs, "query", batch_size, normalize_embeddings)

    def encode_document(
        self, inputs, batch_size: int = 32, normalize_embeddings: bool = False, **kwargs: Any
    ) -> np.ndarray:
        """Document embeddings (the model's "document" prompt, document_length), as numpy."""
        return self._encode(inputs, "document", batch_size, normalize_embeddings)

    def encode(self, inputs, batch_size: int = 32, normalize_embeddings: bool = False, **kwargs: Any) -> np.ndarray:
        """Embeddings with the default prompt and max_seq_length, as numpy."""
        return self._encode(inputs, None, batch_size, normalize_embeddings)


def load_onnx_encoder(model, model_dir: str | os.PathLike, backend: str) -> OnnxSentenceEncoder | None:
    """An OnnxSentenceEncoder for an ONNX backend, or None (with the one-line warning) when only torch can run it."""
    try:
        return OnnxSentenceEncoder(model, model_dir, backend)
    except Exception as err:  # noqa: BLE001 (any export, quantization or session failure: torch still works)
        warn_fallback(model_dir, backend, err)
        return None
