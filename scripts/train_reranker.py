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
"""Train an Eedi reranker on the retriever's candidates (scripts/retrieve.py --candidates_out over every fold).

reranker_type: listwise (the Eedi reference solution's exp015) fine-tunes a causal LM with TRL's SFTTrainer on prompt/completion rows:
the query and N lettered candidates in, the gold letter out, loss on the completion only. reranker_type: pointwise
trains a sentence-transformers CrossEncoder on (query, gold, hard negatives). The held-out fold is reranked after
training: MAP@25 and recall@25 before and after, seen and unseen misconceptions apart.

Usage:

    python scripts/retrieve.py --model data/eedi-minilm-cpu --dataset data/eedi \
        --output_csv data/eedi-train-retrieved.csv --candidates_out data/eedi-minilm-cpu-candidates
    accelerate launch scripts/train_reranker.py --config recipes/eedi/reranker-minilm-cpu.yaml \
        --candidates data/eedi-minilm-cpu-candidates [--dataset_name data/eedi] [--output_dir OUT] \
        [--extra_candidates '[{"path": "data/eedi-synthetic-candidates", "weight": 2}]']
"""

import logging

import pandas as pd
from transformers import set_seed
from trl import ModelConfig, TrlParser

from misconceptions import (
    RerankerConfig,
    ScriptArguments,
    cli_entry,
    load_eedi_dataset,
    resolve_checkpoint,
    setup_logging,
)
from misconceptions.candidates import attach_folds, extra_candidate_rows, read_candidates, retriever_settings
from misconceptions.cli import parse_recipe_args, use_cpu_cores
from misconceptions.eedi import seen_misconception_ids
from misconceptions.errors import InputError
from misconceptions.listwise import build_listwise_model, listwise_sft_rows
from misconceptions.pointwise import (
    build_cross_encoder,
    cross_encoder_args,
    pointwise_training_rows,
    reranking_evaluator,
)
from misconceptions.profiling import profile_callbacks
from misconceptions.rerank import finalize_reranker
from misconceptions.rerank_model import Reranker
from misconceptions.settings import RerankerSettings, model_dtype, quantization_of


logger = logging.getLogger(__name__)


def train(script_args: ScriptArguments, training_args: RerankerConfig, model_args: ModelConfig) -> None:
    # 1. Seed, logging, the CPU threads, and the checkpoint to resume from
    set_seed(training_args.seed)
    setup_logging(training_args)
    use_cpu_cores()
    logger.info("Script %s\nModel %s\nTraining %s", script_args, model_args, training_args)
    if not training_args.candidates:
        raise InputError("candidates is required: the folder written by scripts/retrieve.py --candidates_out")
    checkpoint = resolve_checkpoint(training_args)

    # 2. Data: candidates joined with the dataset's labels and folds; the held-out fold is reranked at the end
    pairs, misconceptions = load_eedi_dataset(script_args.dataset_name)
    names = dict(zip(misconceptions["MisconceptionId"], misconceptions["MisconceptionName"], strict=True))
    candidates = read_candidates(training_args.candidates, names)
    frame = attach_folds(candidates, pairs[script_args.dataset_train_split].to_pandas(), training_args.candidates)
    train_df = frame[frame["fold"] != training_args.fold].reset_index(drop=True).assign(source="real")
    eval_df = frame[frame["fold"] == training_args.fold].reset_index(drop=True) if training_args.fold >= 0 else None
    if training_args.extra_candidates:
        extra = extra_candidate_rows(training_args.extra_candidates, names, training_args.seed)
        train_df = pd.concat([train_df, extra[list(train_df.columns)]], ignore_index=True)
    settings = RerankerSettings(
        reranker_type=training_args.reranker_type,
        base_model=model_args.model_name_or_path,
        dataset=script_args.dataset_name,
        dtype=model_dtype(model_args.dtype),
        candidates=training_args.candidates,
        fold=training_args.fold,
        max_length=training_args.max_length,
        rerank_top_k=training_args.rerank_top_k,
        window=training_args.window,
        stride=training_args.stride,
        blend_weight=training_args.blend_weight,
        rerank_scope=training_args.rerank_scope,
        cpu_bf16=training_args.cpu_bf16,
        retriever_scale=retriever_settings(training_args.candidates).loss_scale,
        train_rows=len(train_df),
        seen_misconception_ids=seen_misconception_ids(train_df),
        extra_candidates=training_args.extra_candidates,
    )

    # 3-5. Model, training rows and trainer
    if training_args.reranker_type == "listwise":
        from trl import SFTTrainer

        model, tokenizer, peft_config = build_listwise_model(model_args, training_args)
        with training_args.main_process_first(desc="listwise prompts"):
            train_dataset, _ = listwise_sft_rows(
                train_df, names, training_args.num_candidates, tokenizer, training_args.max_length, training_args.seed
            )
            eval_dataset = None
            if eval_df is not None and training_args.eval_strategy != "no":
                eval_dataset, _ = listwise_sft_rows(
                    eval_df, names, training_args.num_candidates, tokenizer, training_args.max_length
                )
        trainer = SFTTrainer(
            model=model,
            args=training_args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=profile_callbacks(training_args),
        )
        settings.num_candidates = training_args.num_candidates
        settings.quantization = quantization_of(model)
    else:
        from sentence_transformers.cross_encoder import CrossEncoderTrainer
        from sentence_transformers.cross_encoder.losses import MultipleNegativesRankingLoss

        model, tokenizer = build_cross_encoder(model_args, training_args), None
        train_dataset = pointwise_training_rows(train_df, names, training_args.num_negatives)
        evaluator = None
        if eval_df is not None and training_args.eval_strategy != "no":
            evaluator = reranking_evaluator(
                eval_df, names, training_args.rerank_top_k, training_args.per_device_eval_batch_size
            )
        trainer = CrossEncoderTrainer(
            model=model,
            args=cross_encoder_args(training_args),
            train_dataset=train_dataset,
            loss=MultipleNegativesRankingLoss(model, num_negatives=training_args.in_batch_negatives),
            evaluator=evaluator,
            callbacks=profile_callbacks(training_args),
        )
        settings.num_negatives = training_args.num_negatives
    logger.info("Training rows: %d (%s)", len(train_dataset), training_args.reranker_type)

    # 6. Train (resuming), then save, held-out reranking, card and push
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    reranker = Reranker(training_args.reranker_type, trainer.model, tokenizer, settings)
    finalize_reranker(trainer, train_result, reranker, eval_df, training_args)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    """Parse the recipe (`--config FILE`, or FILE first) and command-line overrides, then train."""
    train(*parse_recipe_args(TrlParser((ScriptArguments, RerankerConfig, ModelConfig)), argv))


if __name__ == "__main__":
    main()
