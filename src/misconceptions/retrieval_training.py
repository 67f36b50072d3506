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
"""Training the Eedi retriever: building the bi-encoder, its training pairs with hard negatives, the batch sampler,
the held-out evaluator, and saving the result.

`build_retriever` makes a SentenceTransformer (`Transformer` + `Pooling`, `lasttoken` pooling finding the last
attended token under either padding side) over any encoder or decoder, optionally 4-bit and/or LoRA. Training uses
sentence-transformers as is (`MultipleNegativesRankingLoss`, the NO_DUPLICATES sampler, `mine_hard_negatives`,
`learning_rate_mapping`); written here are the evaluator (InformationRetrievalEvaluator cannot report seen and
unseen misconceptions apart from one encoding pass), a sampler that allows shared negatives, and negatives taken
from saved candidates (a second round). Inference (loading, encoding, search) is in `retrieval`.
"""

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerModelCardData, SentenceTransformerTrainer
from sentence_transformers.base.evaluation import BaseEvaluator
from sentence_transformers.base.modules import Transformer
from sentence_transformers.base.sampler import NoDuplicatesBatchSampler
from sentence_transformers.sentence_transformer.modules import Pooling

from .candidates import TOP_K, load_candidates
from .eedi import seen_misconception_ids
from .errors import InputError
from .io_utils import atomic_path
from .model_utils import (
    device_map_for_quantized,
    keep_bnb_cpu_weights_trainable,
    resolve_model_path,
    torch_dtype,
    training_quantization_config,
)
from .plots import PLOTS_DIR, plot_eedi
from .retrieval import RECALL_KS, encode_documents, encode_queries, retrieval_metrics, search
from .settings import RetrieverSettings, model_dtype, quantization_of
from .speed import bucket_by_length
from .training import RunCard, finalize_run


logger = logging.getLogger(__name__)

POOLING_MODES = {"last_token": "lasttoken", "mean": "mean", "cls": "cls"}


def build_retriever(model_args, training_args) -> SentenceTransformer:
    """A SentenceTransformer (Transformer + Pooling) over any HF encoder or decoder, optionally 4-bit and/or LoRA.

    The query prompt is saved as the model's "query" prompt, so `encode_query` applies it at inference too.
    """
    from trl import get_peft_config

    path = resolve_model_path(model_args.model_name_or_path)
    quantization_config = training_quantization_config(model_args)
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
        # Plain text in, as in the Eedi reference solution: a model with a chat template would otherwise get every query and document
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
    if training_args.length_bucket_size:
        bucket_by_length(transformer.auto_model, training_args.length_bucket_size)
    return model


class RetrieverTrainer(SentenceTransformerTrainer):
    """sentence-transformers' trainer, loading a LoRA run's checkpoints (the best one at the end, or a resume) as
    adapter weights into the model in memory (transformers' `load_adapter(..., hotswap=True)`).

    The stock path rebuilds the whole model from the checkpoint and copies its state dict: a quantized base is then
    loaded again, and a GPTQ base may come back with another kernel whose packed weights have other shapes
    ("size mismatch for ...qweight", measured on the CPU), so the best checkpoint was silently not loaded.
    """

    def _load_from_checkpoint(self, checkpoint_path: str) -> None:
        auto_model = getattr(self.model[0], "auto_model", None)
        adapter = Path(checkpoint_path) / "adapter_model.safetensors"
        if adapter.is_file() and getattr(auto_model, "_hf_peft_config_loaded", False):
            auto_model.load_adapter(checkpoint_path, adapter_name="default", hotswap=True)
            logger.info("LoRA weights loaded from %s", checkpoint_path)
            return
        super()._load_from_checkpoint(checkpoint_path)


def model_num_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


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

    Hand-written because NO_DUPLICATES compares every column: with many mined negatives per row (the Eedi reference solution's 96) the
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
    explanations: bool = False,
) -> dict[str, float]:
    """`finalize_run` for a retriever: its settings (query format, pooling, loss scale, explanations used, seen
    misconceptions) and MAP@25/recall of the final model on the held-out fold, as retrieve.py computes them."""
    seen = seen_misconception_ids(train_df)
    settings = RetrieverSettings(
        base_model=model_args.model_name_or_path,
        dataset=script_args.dataset_name,
        dtype=model_dtype(model_args.dtype),
        quantization=quantization_of(trainer.model),
        fold=training_args.fold,
        pooling=training_args.pooling,
        query_prompt=training_args.query_prompt,
        query_template=training_args.query_template,
        query_max_length=training_args.query_max_length,
        document_max_length=training_args.document_max_length,
        loss_scale=training_args.scale,
        explanations=explanations,
        seen_misconception_ids=seen,
        extra_datasets=training_args.extra_datasets,
    )

    def evaluate(output_dir: Path) -> dict[str, float]:
        if evaluator is None:
            return {}
        # The same numbers retrieve.py reports on this fold: the held-out rows against all misconceptions.
        metrics = {f"eval_{k}": v for k, v in evaluator(trainer.model).items()}
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
        return metrics

    card = RunCard(
        title="Eedi retriever",
        task="Eedi misconception retrieval (question + correct answer + wrong answer -> misconception), a bi-encoder",
        usage=(
            "python scripts/retrieve.py --model MODEL --input_csv test.csv "
            "--misconceptions_csv misconception_mapping.csv --output_csv submission.csv"
        ),
        tags=["eedi", "sentence-similarity", "feature-extraction"],
        headline="eval_map@25",
        headline_label="eval MAP@25",
        library_name="sentence-transformers",
        trainer_card={"tags": ["misconceptions", "eedi", "sentence-similarity", "feature-extraction"]},
    )
    return finalize_run(
        trainer,
        train_result,
        training_args,
        settings=settings,
        num_train_samples=len(train_df),
        card=card,
        evaluate=evaluate,
    )
