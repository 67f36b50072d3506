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
"""Eedi retrieval with a trained bi-encoder: loading it back (full model, LoRA adapter on a 4-bit base, or ONNX),
encoding, cached misconception embeddings, exact or FAISS search, MAP@25/recall@K (seen and unseen misconceptions
apart), and the top candidates of every wrong answer in a question CSV or in a built dataset's rows.

Queries and documents are encoded with the SentenceTransformer's own `encode_query` / `encode_document` (the saved
"query" prompt and per-task max lengths). The misconception embeddings are cached by model folder, source file and
document settings. Building and training the retriever is in `retrieval_training`; the candidates' file format in
`candidates`.
"""

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from datasets import Dataset
from sentence_transformers import SentenceTransformer

from .candidates import TOP_K
from .eedi import (
    MISCONCEPTION_COLUMNS,
    PIVOT_COLUMNS,
    pivot_wrong_answers,
    query_texts,
    read_misconceptions_csv,
    read_questions_csv,
)
from .errors import InputError
from .explanations import attach_explanations
from .io_utils import atomic_path
from .metrics import map_at_k, recall_at_k
from .model_utils import (
    cache_dir,
    device_map_for_quantized,
    keep_bnb_cpu_weights_trainable,
    reload_quantization_config,
    torch_dtype,
)
from .onnx_backend import load_onnx_encoder, resolve_backend
from .settings import RetrieverSettings, union_of_seen


logger = logging.getLogger(__name__)

RETRIEVER_META = RetrieverSettings.FILE
RECALL_KS = (25, 50, 100)


def split_fold(pairs: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Training rows (fold != `fold`) and held-out rows (fold == `fold`); -1 trains on every row, holds none out."""
    folds = sorted(int(f) for f in pairs["fold"].unique())
    if fold == -1:
        return pairs.reset_index(drop=True), None
    if fold not in folds:
        raise InputError(f"--fold {fold} is not a fold of this dataset; its folds are {folds} (or -1 for all)")
    held_out = pairs["fold"] == fold
    return pairs[~held_out].reset_index(drop=True), pairs[held_out].reset_index(drop=True)


def retrieval_metrics(
    actual: list[int], ranked: np.ndarray | list[list[int]], seen: set[int] | None = None, ks=RECALL_KS
) -> dict[str, float]:
    """MAP@25 and recall@K over all rows, and for rows whose misconception was seen / unseen in training apart."""
    ranked = [list(r) for r in ranked]
    groups = {"": list(range(len(actual)))}
    if seen is not None:
        groups["seen_"] = [i for i, a in enumerate(actual) if a in seen]
        groups["unseen_"] = [i for i, a in enumerate(actual) if a not in seen]
    metrics: dict[str, float] = {}
    for prefix, rows in groups.items():
        act, pred = [actual[i] for i in rows], [ranked[i] for i in rows]
        metrics[f"{prefix}map@{TOP_K}"] = map_at_k(act, pred, k=TOP_K) if rows else 0.0
        for k in ks:
            metrics[f"{prefix}recall@{k}"] = recall_at_k(act, pred, k=k)
        metrics[f"{prefix}rows"] = len(rows)
    return metrics


def search(
    queries: np.ndarray, documents: np.ndarray, k: int, use_faiss: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k over normalized embeddings: (scores, indices), best first."""
    k = min(k, len(documents))
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    documents = np.ascontiguousarray(documents, dtype=np.float32)
    if use_faiss:
        import faiss

        index = faiss.IndexFlatIP(documents.shape[1])
        index.add(documents)
        scores, indices = index.search(queries, k)
        return scores, indices
    sims = queries @ documents.T
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(sims, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)  # by score, ties by document index (deterministic)
    indices = np.take_along_axis(part, order, axis=1)
    return np.take_along_axis(sims, indices, axis=1), indices


def encode_queries(model: SentenceTransformer, texts: list[str], batch_size: int = 64) -> np.ndarray:
    return model.encode_query(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )


def encode_documents(model: SentenceTransformer, texts: list[str], batch_size: int = 64) -> np.ndarray:
    return model.encode_document(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )


def model_fingerprint(model_dir: str | os.PathLike) -> str:
    """Identity of a model folder for caching: every file's relative path, size and mtime (weights are not read)."""
    root = Path(model_dir).resolve()
    digest = hashlib.sha256(str(root).encode())
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not relative.parts[0].startswith(("checkpoint-", "eval", ".")):
            stat = path.stat()
            digest.update(f"{relative}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_document_embeddings(
    model: SentenceTransformer,
    model_dir: str,
    texts: list[str],
    source_file: str | os.PathLike | None,
    batch_size: int = 64,
    cache_folder: str | os.PathLike | None = None,
) -> tuple[np.ndarray, bool]:
    """Misconception embeddings, cached by (model folder fingerprint, source file sha256 or, without a file (the
    mapping of a built dataset), the texts' sha256, document settings).

    Returns (embeddings, whether they came from the cache). The cache is written atomically.
    """
    module = model[0]
    source = file_sha256(source_file) if source_file else hashlib.sha256(json.dumps(texts).encode()).hexdigest()
    key = hashlib.sha256(
        json.dumps(
            [
                model_fingerprint(model_dir),
                source,
                model.prompts.get("document", ""),
                getattr(module, "document_length", None),
                len(texts),
            ]
            # ONNX documents apart from torch's (fp32 ONNX for both ONNX backends)
            + ([model.document_backend] if hasattr(model, "document_backend") else [])
        ).encode()
    ).hexdigest()[:32]
    folder = Path(cache_folder) if cache_folder else cache_dir() / "embeddings"
    path = folder / f"misconceptions-{key}.npy"
    if path.is_file():
        embeddings = np.load(path)
        if embeddings.shape[0] == len(texts):
            logger.info("Misconception embeddings loaded from the cache %s", path)
            return embeddings, True
    embeddings = encode_documents(model, texts, batch_size)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, embeddings)
    logger.info("Misconception embeddings cached in %s", path)
    return embeddings, False


def load_retriever(
    model_dir: str, device: str | None = None, backend: str = "torch"
) -> tuple[SentenceTransformer, RetrieverSettings]:
    """Load a folder written by train_retriever.py (or any SentenceTransformer folder, with default settings).

    `backend`: `torch`, `onnx`, `onnx-int8` or `auto` (see `onnx_backend`). With ONNX the model returned is an
    `OnnxSentenceEncoder`: the same `encode_query`/`encode_document` on ONNX Runtime, everything else the
    SentenceTransformer's. A model that ONNX cannot run falls back to torch with a one-line warning.
    """
    backend = resolve_backend(backend, task="retriever")
    path = Path(model_dir)
    if not (path / "modules.json").is_file():
        raise InputError(f"{model_dir}: not a sentence-transformers model folder (no modules.json)")
    settings = RetrieverSettings.load(path)
    model_kwargs: dict[str, Any] = {}
    if settings.dtype:
        model_kwargs["dtype"] = torch_dtype(settings.dtype)
    quantization_config = reload_quantization_config(settings)  # as trained: the same kernels, the same scores
    if quantization_config is not None:
        model_kwargs["quantization_config"] = quantization_config
    if settings.quant_method is not None:
        model_kwargs["device_map"] = device_map_for_quantized()
    model = SentenceTransformer(str(path), device=device, model_kwargs=model_kwargs or None)
    keep_bnb_cpu_weights_trainable(model)  # the same 4-bit kernels as in training: identical scores
    model.eval()
    if backend != "torch":
        model = load_onnx_encoder(model, model_dir, backend) or model
    return model, settings


def wrong_answer_rows(
    questions: str | os.PathLike | pd.DataFrame | Dataset, misconceptions: pd.DataFrame
) -> pd.DataFrame:
    """One row per wrong answer: a wide question CSV read, validated and pivoted, or a built dataset's pivoted rows
    (`eedi.dataset_rows`, or any frame with `PIVOT_COLUMNS`) taken as they are, in their order. Labels must be in
    `misconceptions`; a missing column or an unknown label is one clear error."""
    ids = set(misconceptions["MisconceptionId"])
    if not isinstance(questions, pd.DataFrame | Dataset):
        return pivot_wrong_answers(read_questions_csv(questions, misconception_ids=ids), misconceptions)
    rows = questions.to_pandas() if isinstance(questions, Dataset) else questions.reset_index(drop=True)
    missing = [c for c in PIVOT_COLUMNS if c not in rows.columns]
    if missing:
        raise InputError(f"the question rows lack column(s) {missing}; give pivoted rows as build_eedi.py writes")
    rows = rows.copy()
    labels = rows["MisconceptionId"] if "MisconceptionId" in rows.columns else pd.Series(pd.NA, index=rows.index)
    rows["MisconceptionId"] = labels.astype("Int64")
    unknown = sorted({int(i) for i in rows["MisconceptionId"].dropna()} - ids)
    if unknown:
        raise InputError(f"the question rows are labelled with misconception ids not in the mapping: {unknown[:5]}")
    return rows


def retrieve_candidates(
    model_dir: str | Sequence[str],
    input_csv: str | os.PathLike | pd.DataFrame | Dataset,
    misconceptions_csv: str | os.PathLike | pd.DataFrame,
    k: int,
    batch_size: int = 64,
    use_faiss: bool = False,
    embedding_cache: str | None = None,
    explanations: str | None = None,
    backend: str = "torch",
) -> tuple[pd.DataFrame, RetrieverSettings, dict[str, Any]]:
    """Retrieve the top `k` misconceptions for every wrong answer of an Eedi question CSV, or of a built dataset's
    pivoted rows (a DataFrame or Dataset: `eedi.dataset_rows`, so no wide CSV is written and read back).

    `misconceptions_csv`: misconception_mapping.csv, or the id/name frame (`load_eedi_dataset`'s second value).
    Inputs are validated before the model loads. Returns (candidates, the model's settings, run info): one row per
    wrong answer with QuestionId_Answer, QuestionId, Answer, query, MisconceptionId (None when unlabelled) and the
    candidate_ids/candidate_scores/candidate_names lists, best first: `retrieve.py --candidates_out`'s schema.
    With `explanations` (a scripts/explain.py folder), each query ends with its `<LLMOutput>`. `backend`: see
    `load_retriever`. Several model folders (one per fold) combine by their mean cosine similarity: each encodes
    with its own prompt, and the concatenated normalized embeddings, scaled by 1/sqrt(n), score exactly that mean;
    the settings returned are the first model's.
    """
    import time

    if isinstance(misconceptions_csv, pd.DataFrame):
        missing = [c for c in MISCONCEPTION_COLUMNS if c not in misconceptions_csv.columns]
        if missing:
            raise InputError(f"the misconceptions table lacks column(s) {missing}")
        misconceptions, source_file = misconceptions_csv.sort_values("MisconceptionId").reset_index(drop=True), None
    else:
        misconceptions, source_file = read_misconceptions_csv(misconceptions_csv), misconceptions_csv
    rows = wrong_answer_rows(input_csv, misconceptions)
    model_dirs = [model_dir] if isinstance(model_dir, str | os.PathLike) else list(model_dir)
    if not model_dirs:
        raise InputError("no retriever model given")
    if explanations:  # the Eedi reference solution's <LLMOutput>, for a retriever trained with explanations
        rows = attach_explanations(rows, explanations)
    elif "LLMOutput" not in rows.columns:
        for folder in model_dirs:
            if RetrieverSettings.load(folder).explanations:
                raise InputError(
                    f"{folder} was trained with <LLMOutput> explanations: pass --explanations, the scripts/explain.py "
                    "folder that explains these rows"
                )
    query_parts, document_parts, cached, seen_lists, encode_seconds = [], [], [], [], 0.0
    settings: RetrieverSettings | None = None
    queries_text: list[str] = []
    for folder in model_dirs:
        model, model_settings = load_retriever(folder, backend=backend)
        settings = settings or model_settings
        seen_lists.append(model_settings.seen_misconception_ids)
        documents, was_cached = cached_document_embeddings(
            model, folder, misconceptions["MisconceptionName"].tolist(), source_file, batch_size, embedding_cache
        )
        texts = query_texts(rows, model_settings.query_template)
        queries_text = queries_text or texts
        started = time.perf_counter()
        query_parts.append(encode_queries(model, texts, batch_size))
        encode_seconds += time.perf_counter() - started
        document_parts.append(documents)
        cached.append(was_cached)
        backend_used = getattr(model, "backend", "torch")  # ONNX falls back to torch for a model it cannot run
        del model
    if len(model_dirs) > 1:  # the fold models' training misconceptions together count as seen
        seen = union_of_seen(seen_lists)
        settings = dataclasses.replace(settings, seen_misconception_ids=None if seen is None else sorted(seen))
    scale = 1.0 / np.sqrt(len(model_dirs))
    queries = np.concatenate(query_parts, axis=1) * scale
    documents = np.concatenate(document_parts, axis=1) * scale
    scores, indices = search(queries, documents, k, use_faiss=use_faiss)
    ids = misconceptions["MisconceptionId"].to_numpy()
    names = misconceptions["MisconceptionName"].to_numpy()
    candidates = pd.DataFrame(
        {
            "QuestionId_Answer": rows["QuestionId_Answer"].to_numpy(),
            "QuestionId": rows["QuestionId"].astype(int).to_numpy(),
            "Answer": rows["Answer"].to_numpy(),
            "query": queries_text,
            "MisconceptionId": [None if pd.isna(i) else int(i) for i in rows["MisconceptionId"]],
            "candidate_ids": [[int(i) for i in row] for row in ids[indices]],
            "candidate_scores": list(scores.astype(np.float32)),
            "candidate_names": [list(row) for row in names[indices]],
        }
    )
    info = {
        "queries_per_second": len(rows) / max(encode_seconds, 1e-9),
        "embeddings_cached": all(cached),
        "backend": backend_used,
        "models": len(model_dirs),
    }
    return candidates, settings, info
