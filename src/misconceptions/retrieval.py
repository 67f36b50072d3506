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
"""Eedi retrieval: a sentence-transformers bi-encoder over any encoder or decoder, its training pairs with hard
negatives, MAP@25/recall@K evaluation (seen and unseen misconceptions apart), cached misconception embeddings,
exact or FAISS search, and loading a trained retriever back (full model, or LoRA adapter on a 4-bit base).

Everything sentence-transformers has is used as is: `Transformer` + `Pooling` modules (`lasttoken` pooling finds the
last attended token, so it is right under left or right padding), per-task query/document max lengths, prompts,
`MultipleNegativesRankingLoss`, the NO_DUPLICATES batch sampler, `mine_hard_negatives`, PEFT adapters and
`learning_rate_mapping`. Written here: the evaluator (sentence-transformers' InformationRetrievalEvaluator cannot
report a subset of queries, seen vs unseen misconceptions, from one encoding pass) and the embedding cache.
"""

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerModelCardData
from sentence_transformers.base.evaluation import BaseEvaluator
from sentence_transformers.base.modules import Transformer
from sentence_transformers.base.sampler import NoDuplicatesBatchSampler
from sentence_transformers.sentence_transformer.modules import Pooling

from .errors import InputError
from .io_utils import atomic_path, write_json
from .metrics import map_at_k, recall_at_k
from .model_utils import (
    cache_dir,
    device_map_for_quantized,
    keep_bnb_cpu_weights_trainable,
    resolve_model_path,
    torch_dtype,
)


logger = logging.getLogger(__name__)

RETRIEVER_META = "misconceptions_retriever.json"
POOLING_MODES = {"last_token": "lasttoken", "mean": "mean", "cls": "cls"}
RECALL_KS = (25, 50, 100)
TOP_K = 25


def build_retriever(model_args, training_args) -> SentenceTransformer:
    """A SentenceTransformer (Transformer + Pooling) over any HF encoder or decoder, optionally 4-bit and/or LoRA.

    The query prompt is saved as the model's "query" prompt, so `encode_query` applies it at inference too.
    """
    from trl import get_peft_config, get_quantization_config

    path = resolve_model_path(model_args.model_name_or_path)
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None and not model_args.use_peft:
        raise InputError("a 4-bit or 8-bit base model can only be trained with LoRA: set use_peft: true")
    if training_args.lora_learning_rate is not None and not model_args.use_peft:
        raise InputError("lora_learning_rate needs use_peft: true (there are no LoRA weights otherwise)")
    trust_remote_code = bool(getattr(model_args, "trust_remote_code", False))
    model_kwargs: dict[str, Any] = {"dtype": torch_dtype(model_args.dtype), "revision": model_args.model_revision}
    if model_args.attn_implementation:
        model_kwargs["attn_implementation"] = model_args.attn_implementation
    if quantization_config is not None:
        model_kwargs |= {"quantization_config": quantization_config, "device_map": device_map_for_quantized()}
    processor_kwargs: dict[str, Any] = {"revision": model_args.model_revision}
    if training_args.padding_side:
        processor_kwargs["padding_side"] = training_args.padding_side
    transformer = Transformer(
        path,
        model_kwargs=model_kwargs,
        processor_kwargs=processor_kwargs,
        config_kwargs={"revision": model_args.model_revision, "trust_remote_code": trust_remote_code},
        query_length=training_args.query_max_length,
        document_length=training_args.document_max_length,
        max_seq_length=max(training_args.query_max_length, training_args.document_max_length),
        # Plain text in, as the seed: a model with a chat template would otherwise get every query and document
        # wrapped in chat turns, the prompt as a system message, and its last token would be the template's.
        modality_config={"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
        module_output_name="token_embeddings",
    )
    keep_bnb_cpu_weights_trainable(transformer.auto_model)
    tokenizer = transformer.tokenizer
    if tokenizer.pad_token is None:  # decoders often have none; the attention mask keeps it out of pooling
        tokenizer.pad_token = tokenizer.eos_token
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode=POOLING_MODES[training_args.pooling])
    model = SentenceTransformer(
        modules=[transformer, pooling],
        prompts={"query": training_args.query_prompt, "document": ""},
        similarity_fn_name="cosine",
        device="cpu" if training_args.use_cpu or quantization_config is not None else None,
        model_card_data=SentenceTransformerModelCardData(
            language="en",
            license="apache-2.0",
            model_name=f"{Path(training_args.output_dir).name}: Eedi misconception retriever",
        ),
    )
    model.model_card_data.set_base_model(model_args.model_name_or_path)
    peft_config = get_peft_config(model_args)
    if peft_config is not None:
        if quantization_config is not None:
            from peft import prepare_model_for_kbit_training

            prepare_model_for_kbit_training(
                transformer.auto_model, use_gradient_checkpointing=bool(training_args.activation_checkpointing)
            )
        model.add_adapter(peft_config)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        logger.info("LoRA adapter added: %d trainable parameters of %d", trainable, model_num_parameters(model))
    return model


def model_num_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


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
    source_file: str | os.PathLike,
    batch_size: int = 64,
    cache_folder: str | os.PathLike | None = None,
) -> tuple[np.ndarray, bool]:
    """Misconception embeddings, cached by (model folder fingerprint, source file sha256, document settings).

    Returns (embeddings, whether they came from the cache). The cache is written atomically.
    """
    module = model[0]
    key = hashlib.sha256(
        json.dumps(
            [
                model_fingerprint(model_dir),
                file_sha256(source_file),
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


class MisconceptionRetrievalEvaluator(BaseEvaluator):
    """MAP@25 and recall@25/50/100 of held-out queries against every misconception, seen and unseen apart.

    Hand-written because sentence-transformers' InformationRetrievalEvaluator scores all queries together; this one
    encodes once and reports the subsets (misconceptions absent from the training fold are the ones that matter).
    """

    def __init__(
        self,
        queries: list[str],
        labels: list[int],
        corpus_ids: list[int],
        corpus_texts: list[str],
        seen_ids: set[int] | None = None,
        batch_size: int = 64,
        name: str = "",
    ):
        super().__init__()
        self.queries, self.labels = list(queries), [int(x) for x in labels]
        self.corpus_ids, self.corpus_texts = np.asarray(corpus_ids), list(corpus_texts)
        self.seen_ids = seen_ids
        self.batch_size = batch_size
        self.name = name
        self.primary_metric = f"map@{TOP_K}"
        self.last_ranked: np.ndarray | None = None
        self.last_scores: np.ndarray | None = None

    def __call__(self, model, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        query_embeddings = encode_queries(model, self.queries, self.batch_size)
        document_embeddings = encode_documents(model, self.corpus_texts, self.batch_size)
        scores, indices = search(query_embeddings, document_embeddings, max(RECALL_KS))
        self.last_scores, self.last_ranked = scores, self.corpus_ids[indices]
        metrics = retrieval_metrics(self.labels, self.last_ranked, self.seen_ids)
        logger.info(
            "Held-out retrieval (epoch %s, step %s): %s",
            epoch,
            steps,
            ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "rows" not in k),
        )
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics


def make_evaluator(eval_df: pd.DataFrame, misconceptions: pd.DataFrame, seen_ids: set[int], batch_size: int = 64):
    return MisconceptionRetrievalEvaluator(
        queries=eval_df["query"].tolist(),
        labels=eval_df["MisconceptionId"].astype(int).tolist(),
        corpus_ids=misconceptions["MisconceptionId"].tolist(),
        corpus_texts=misconceptions["MisconceptionName"].tolist(),
        seen_ids=seen_ids,
        batch_size=batch_size,
    )


class NoFalseNegativesBatchSampler(NoDuplicatesBatchSampler):
    """Batches in which no misconception is the positive of two rows, and no row's positive is another row's negative.

    Hand-written because NO_DUPLICATES compares every column: with many mined negatives per row (the seed's 96) the
    rows of a batch would need 16 x 97 different misconceptions out of 2,587, and nearly every candidate row overlaps,
    so batches stay tiny. Shared negatives are harmless (a negative for both rows); what MultipleNegativesRankingLoss
    cannot survive is a row's own misconception scored as a negative, and that is all this sampler forbids.
    It reuses NoDuplicatesBatchSampler's single pass (deferring conflicting rows) with its own overlap rule.
    """

    def __iter__(self):
        if self.generator and self.seed is not None:
            self.generator.manual_seed(self.seed + self.epoch)
        columns = self.dataset.column_names
        data = self.dataset.to_dict()
        anchors, positives = data[columns[0]], data[columns[1]]
        negatives = [data[c] for c in columns[2:]]

        def get_sample_values(index: int) -> set:
            return {("anchor", anchors[index]), ("positive", positives[index])} | {
                ("negative", column[index]) for column in negatives
            }

        def has_overlap(sample: set, batch: set) -> bool:
            for kind, text in sample:
                if kind == "negative":
                    if ("positive", text) in batch:
                        return True
                elif (kind, text) in batch or (kind == "positive" and ("negative", text) in batch):
                    return True
            return False

        yielded = 0
        for _ in range(3):  # like NO_DUPLICATES: reshuffle to reach the advertised number of batches
            for batch in self._iter_one_pass(get_sample_values, has_overlap):
                yield batch
                yielded += 1
                if yielded >= len(self):
                    return


def _negatives_from_candidates(
    train_df: pd.DataFrame, candidates: pd.DataFrame, names: dict[int, str], args
) -> tuple[list[list[str]], np.ndarray]:
    """Negatives per training row from saved candidates (their ranking, positive skipped); rows without any are
    reported in the returned mask."""
    by_key = dict(zip(candidates["QuestionId_Answer"], candidates["candidate_ids"], strict=True))
    rng = np.random.default_rng(args.seed)
    negatives, missing = [], np.zeros(len(train_df), dtype=bool)
    for i, (key, positive) in enumerate(zip(train_df["QuestionId_Answer"], train_df["MisconceptionId"], strict=True)):
        ranked = [int(c) for c in by_key.get(key, []) if int(c) != int(positive)]
        pool = ranked[args.hard_negatives_range_min : args.hard_negatives_range_max]
        if len(pool) < args.num_negatives:
            missing[i] = True
            negatives.append([])
            continue
        if args.hard_negatives_sampling == "random":
            pool = [pool[j] for j in sorted(rng.choice(len(pool), args.num_negatives, replace=False))]
        negatives.append([names[c] for c in pool[: args.num_negatives]])
    return negatives, missing


def load_candidates(path: str, required: tuple[str, ...] = ("QuestionId_Answer", "candidate_ids")) -> pd.DataFrame:
    """Candidates saved by retrieve.py --candidates_out (a folder or a Hub dataset), with the `required` columns."""
    from .data import load_dataset_any

    candidates = load_dataset_any(path, kind="candidates")  # one line when neither a folder nor on the Hub
    if hasattr(candidates, "keys"):  # a DatasetDict: the candidates are its only (or "train") split
        candidates = candidates["train"] if "train" in candidates else next(iter(candidates.values()))
    frame = candidates.to_pandas()
    for column in required:
        if column not in frame.columns:
            raise InputError(
                f"{path}: candidates lack column '{column}'; write them with retrieve.py --candidates_out"
            )
    return frame


def make_training_pairs(
    train_df: pd.DataFrame, misconceptions: pd.DataFrame, args, model: SentenceTransformer
) -> Dataset:
    """(anchor, positive[, negative_1..n]) rows: in-batch negatives, plus hard negatives from saved candidates
    (`hard_negatives_dataset`, the second round) or mined with `mine_hard_negatives` and the model itself."""
    from sentence_transformers.util import mine_hard_negatives

    base = pd.DataFrame({"anchor": train_df["query"], "positive": train_df["MisconceptionName"]})
    if args.num_negatives == 0:
        return Dataset.from_pandas(base, preserve_index=False)
    names = dict(zip(misconceptions["MisconceptionId"], misconceptions["MisconceptionName"], strict=True))
    to_mine = np.ones(len(base), dtype=bool)
    parts = []
    if args.hard_negatives_dataset:
        negatives, missing = _negatives_from_candidates(
            train_df, load_candidates(args.hard_negatives_dataset), names, args
        )
        found = base[~missing].copy()
        for j in range(args.num_negatives):
            found[f"negative_{j + 1}"] = [row[j] for row, m in zip(negatives, missing, strict=True) if not m]
        parts.append(found)
        to_mine = missing
        logger.info(
            "Hard negatives for %d of %d training rows from %s; mining the other %d",
            len(found),
            len(base),
            args.hard_negatives_dataset,
            int(missing.sum()),
        )
    if to_mine.any():
        mined = mine_hard_negatives(
            Dataset.from_pandas(base[to_mine], preserve_index=False),
            model,
            anchor_column_name="anchor",
            positive_column_name="positive",
            corpus=misconceptions["MisconceptionName"].tolist(),
            range_min=args.hard_negatives_range_min,
            range_max=args.hard_negatives_range_max,
            num_negatives=args.num_negatives,
            sampling_strategy=args.hard_negatives_sampling,
            query_prompt=args.query_prompt or None,
            output_format="n-tuple",
            batch_size=args.per_device_eval_batch_size,
            verbose=False,
        )
        parts.append(mined.to_pandas())
    pairs = pd.concat(parts, ignore_index=True)
    logger.info("Training pairs: %d rows with %d hard negatives each", len(pairs), args.num_negatives)
    return Dataset.from_pandas(pairs, preserve_index=False)


def quantization_to_dict(model: SentenceTransformer) -> dict | None:
    config = getattr(model[0].auto_model.config, "quantization_config", None)
    if config is None:
        return None
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def load_retriever(
    model_dir: str, device: str | None = None, backend: str = "torch"
) -> tuple[SentenceTransformer, dict[str, Any]]:
    """Load a folder written by train_retriever.py (or any SentenceTransformer folder, with empty metadata).

    `backend`: `torch`, `onnx`, `onnx-int8` or `auto` (see `onnx_backend`). With ONNX the model returned is an
    `OnnxSentenceEncoder`: the same `encode_query`/`encode_document` on ONNX Runtime, everything else the
    SentenceTransformer's. A model that ONNX cannot run falls back to torch with a one-line warning.
    """
    from .onnx_backend import load_onnx_encoder, resolve_backend

    backend = resolve_backend(backend, task="retriever")
    path = Path(model_dir)
    if not (path / "modules.json").is_file():
        raise InputError(f"{model_dir}: not a sentence-transformers model folder (no modules.json)")
    meta_file = path / RETRIEVER_META
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    model_kwargs: dict[str, Any] = {}
    if meta.get("dtype"):
        model_kwargs["dtype"] = torch_dtype(meta["dtype"])
    if meta.get("quantization"):
        from transformers import BitsAndBytesConfig

        model_kwargs["quantization_config"] = BitsAndBytesConfig.from_dict(meta["quantization"])
        model_kwargs["device_map"] = device_map_for_quantized()
    model = SentenceTransformer(str(path), device=device, model_kwargs=model_kwargs or None)
    keep_bnb_cpu_weights_trainable(model)  # the same 4-bit kernels as in training: identical scores
    model.eval()
    if backend != "torch":
        model = load_onnx_encoder(model, model_dir, backend) or model
    return model, meta


def finalize_retriever(
    trainer,
    train_result,
    script_args,
    training_args,
    model_args,
    train_df: pd.DataFrame,
    eval_df: pd.DataFrame | None,
    misconceptions: pd.DataFrame,
    evaluator: MisconceptionRetrievalEvaluator | None,
) -> dict[str, float]:
    """Save model + metadata, evaluate the final (best) model on the held-out fold, plot training and evaluation
    (`<output_dir>/plots/`), write the card, push if asked."""
    from .plots import PLOTS_DIR, link_plots_in_card, plot_eedi, plot_training_curves
    from .training import card_and_push, log_and_save_train_metrics, save_model_without_push

    log_and_save_train_metrics(trainer, train_result, len(train_df))
    save_model_without_push(trainer, training_args.output_dir)
    output_dir = Path(training_args.output_dir)
    from .eedi import seen_misconception_ids

    seen = seen_misconception_ids(train_df)
    meta = {
        "task": "eedi-retrieval",
        "base_model": model_args.model_name_or_path,
        "dataset": script_args.dataset_name,
        "fold": training_args.fold,
        "pooling": training_args.pooling,
        "query_prompt": training_args.query_prompt,
        "query_template": training_args.query_template,
        "query_max_length": training_args.query_max_length,
        "document_max_length": training_args.document_max_length,
        "dtype": model_args.dtype if model_args.dtype not in ("auto", None) else None,
        "quantization": quantization_to_dict(trainer.model),
        "seen_misconception_ids": seen,
        "extra_datasets": dict(
            zip(training_args.extra_datasets or [], training_args.extra_datasets_weights or [], strict=True)
        ),
    }
    metrics: dict[str, float] = {}
    if trainer.is_world_process_zero():
        write_json(output_dir / RETRIEVER_META, meta)
        if evaluator is not None:
            # The same numbers retrieve.py reports on this fold: the held-out rows against all misconceptions.
            metrics = {f"eval_{k}": v for k, v in evaluator(trainer.model).items()}
            trainer.log_metrics("eval", metrics)
            trainer.save_metrics("eval", metrics)
            ranked = evaluator.last_ranked[:, :TOP_K]
            predictions = pd.DataFrame(
                {
                    "QuestionId_Answer": eval_df["QuestionId_Answer"],
                    "MisconceptionId": [" ".join(str(int(i)) for i in row) for row in ranked],
                }
            )
            with atomic_path(output_dir / "eval_predictions.csv") as tmp:
                predictions.to_csv(tmp, index=False)
            plot_eedi(metrics, evaluator.labels, {"retriever": ranked}, output_dir / PLOTS_DIR, set(seen))
        plot_training_curves(trainer.state.log_history, output_dir / PLOTS_DIR)
        logger.info("Plots written to %s", output_dir / PLOTS_DIR)
        trainer.create_model_card(
            model_name=output_dir.name,
            tags=["misconceptions", "eedi", "sentence-similarity", "feature-extraction"],
        )
        link_plots_in_card(output_dir)
    card_and_push(
        trainer,
        training_args,
        f"Eedi retriever, eval MAP@25 {metrics.get('eval_map@25', 0):.4f}",
        task="Eedi misconception retrieval (question + correct answer + wrong answer -> misconception), a bi-encoder",
        base_model=model_args.model_name_or_path,
        dataset=script_args.dataset_name,
        metrics=metrics,
        usage=(
            "python scripts/retrieve.py --model MODEL --input_csv test.csv "
            "--misconceptions_csv misconception_mapping.csv --output_csv submission.csv"
        ),
        tags=["eedi", "sentence-similarity", "feature-extraction"],
        library_name="sentence-transformers",
    )
    return metrics


def retrieve_candidates(
    model_dir: str,
    input_csv: str,
    misconceptions_csv: str,
    k: int,
    batch_size: int = 64,
    use_faiss: bool = False,
    embedding_cache: str | None = None,
    explanations: str | None = None,
    backend: str = "torch",
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Retrieve the top `k` misconceptions for every wrong answer of an Eedi question CSV.

    Inputs are validated before the model loads. Returns (candidates, the model's metadata, run info): one row per
    wrong answer with QuestionId_Answer, QuestionId, Answer, query, MisconceptionId (None when unlabelled) and the
    candidate_ids/candidate_scores/candidate_names lists, best first: `retrieve.py --candidates_out`'s schema.
    With `explanations` (a scripts/explain.py folder), each query ends with its `<LLMOutput>`. `backend`: see
    `load_retriever`.
    """
    import time

    from .eedi import pivot_wrong_answers, query_texts, read_misconceptions_csv, read_questions_csv

    misconceptions = read_misconceptions_csv(misconceptions_csv)
    questions = read_questions_csv(input_csv, misconception_ids=set(misconceptions["MisconceptionId"]))
    rows = pivot_wrong_answers(questions, misconceptions)
    if explanations:  # the seed's <LLMOutput>, for a retriever trained on build_eedi.py --explanations
        from .synthetic import attach_explanations

        rows = attach_explanations(rows, explanations)
    model, meta = load_retriever(model_dir, backend=backend)
    documents, cached = cached_document_embeddings(
        model, model_dir, misconceptions["MisconceptionName"].tolist(), misconceptions_csv, batch_size, embedding_cache
    )
    queries_text = query_texts(rows, meta.get("query_template"))
    started = time.perf_counter()
    queries = encode_queries(model, queries_text, batch_size)
    encode_seconds = time.perf_counter() - started
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
        "embeddings_cached": cached,
        "backend": getattr(model, "backend", "torch"),
    }
    return candidates, meta, info


def save_candidates(candidates: pd.DataFrame, path: str) -> None:
    """Save a candidates frame as a dataset folder (atomically): the reranker's input and second-round negatives."""
    from datasets import Features, Sequence, Value

    features = Features(
        {
            "QuestionId_Answer": Value("string"),
            "QuestionId": Value("int64"),
            "Answer": Value("string"),
            "query": Value("string"),
            "MisconceptionId": Value("int64"),
            "candidate_ids": Sequence(Value("int64")),
            "candidate_scores": Sequence(Value("float32")),
            "candidate_names": Sequence(Value("string")),
        }
    )
    columns = list(features)
    data = {c: candidates[c].tolist() for c in columns}
    data["candidate_scores"] = [np.asarray(s, dtype=np.float32).tolist() for s in candidates["candidate_scores"]]
    data["MisconceptionId"] = [None if pd.isna(i) else int(i) for i in candidates["MisconceptionId"]]
    dataset = Dataset.from_dict(data, features=features)
    with atomic_path(path, is_dir=True) as tmp:
        dataset.save_to_disk(str(tmp))


def submission_frame(keys: list[str], ranked: np.ndarray, top_k: int = TOP_K) -> pd.DataFrame:
    """The Kaggle submission: QuestionId_Answer and the top ids, space-separated, best first."""
    return pd.DataFrame(
        {"QuestionId_Answer": keys, "MisconceptionId": [" ".join(str(int(i)) for i in row[:top_k]) for row in ranked]}
    )
