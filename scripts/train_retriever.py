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
"""Train an Eedi misconception retriever: a bi-encoder, MultipleNegativesRankingLoss with in-batch and hard
negatives, evaluated on a held-out fold against all 2,587 misconceptions (MAP@25, recall@K, seen/unseen apart).

Usage:

    accelerate launch scripts/train_retriever.py --config recipes/eedi/minilm-cpu.yaml
    accelerate launch scripts/train_retriever.py --config recipes/eedi/exp010.yaml --fold 1 \
        --dataset_name data/eedi --output_dir data/eedi-exp010-fold1
    # second round: hard negatives from the first model's candidates (scripts/retrieve.py --candidates_out)
    accelerate launch scripts/train_retriever.py --config recipes/eedi/exp012.yaml \
        --hard_negatives_dataset data/eedi-exp010-fold0-candidates
"""

import logging

import pandas as pd
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from transformers import set_seed
from trl import ModelConfig, TrlParser

from misconceptions import (
    RetrieverConfig,
    RetrieverTrainer,
    ScriptArguments,
    build_retriever,
    cli_entry,
    finalize_retriever,
    load_eedi_dataset,
    make_evaluator,
    make_training_pairs,
    query_texts,
    resolve_checkpoint,
    setup_logging,
    split_fold,
)
from misconceptions.cli import parse_recipe_args, use_cpu_cores
from misconceptions.eedi import extra_training_rows, seen_misconception_ids
from misconceptions.profiling import profile_callbacks


logger = logging.getLogger(__name__)


def train(script_args: ScriptArguments, training_args: RetrieverConfig, model_args: ModelConfig) -> None:
    # 1. Seed, logging, the CPU threads, and the checkpoint to resume from
    set_seed(training_args.seed)
    setup_logging(training_args)
    use_cpu_cores()
    logger.info("Script %s\nModel %s\nTraining %s", script_args, model_args, training_args)
    checkpoint = resolve_checkpoint(training_args)

    # 2. Data: the training folds (plus any extra datasets), the held-out fold, and every misconception
    pairs, misconceptions = load_eedi_dataset(script_args.dataset_name)
    frame = pairs[script_args.dataset_train_split].to_pandas()
    frame["query"] = query_texts(frame, training_args.query_template)
    train_df, eval_df = split_fold(frame, training_args.fold)
    seen = set(seen_misconception_ids(train_df))  # real rows only: synthetic ones do not make a misconception seen
    if training_args.extra_datasets:
        extra = extra_training_rows(
            training_args.extra_datasets,
            set(misconceptions["MisconceptionId"]),
            script_args.dataset_train_split,
            training_args.seed,
        )
        extra["query"] = query_texts(extra, training_args.query_template)
        train_df = pd.concat([train_df.assign(source="real"), extra], ignore_index=True)

    # 3. The bi-encoder (query prompt, pooling, lengths, optional 4-bit base and LoRA)
    model = build_retriever(model_args, training_args)

    # 4. Training rows with hard negatives: saved candidates (second round) or mined with the model itself
    with training_args.main_process_first(desc="hard negatives"):
        train_dataset = make_training_pairs(train_df, misconceptions, training_args, model)

    # 5. Trainer: MNRL at the configured scale; the held-out fold picks the best checkpoint by MAP@25
    evaluator = None
    if eval_df is not None:
        evaluator = make_evaluator(eval_df, misconceptions, seen, training_args.per_device_eval_batch_size)
    trainer = RetrieverTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        loss=MultipleNegativesRankingLoss(model, scale=training_args.scale),
        evaluator=evaluator,
        callbacks=profile_callbacks(training_args),
    )

    # 6. Train (resuming), then save, held-out evaluation, card and push
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    explanations = "LLMOutput" in train_df.columns and bool(train_df["LLMOutput"].notna().any())
    finalize_retriever(
        trainer,
        train_result,
        script_args,
        training_args,
        model_args,
        train_df,
        eval_df,
        misconceptions,
        evaluator,
        explanations=explanations,
    )


@cli_entry
def main(argv: list[str] | None = None) -> None:
    """Parse the recipe (`--config FILE`, or FILE first) and command-line overrides, then train."""
    train(*parse_recipe_args(TrlParser((ScriptArguments, RetrieverConfig, ModelConfig)), argv))


if __name__ == "__main__":
    main()
