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
"""Train a MAP misconception classifier (Category:Misconception labels, MAP@3).

Usage:

    accelerate launch scripts/train_classifier.py --config recipes/map/minilm-cpu.yaml
    accelerate launch scripts/train_classifier.py --config recipes/map/qwen2.5-math-1.5b-qlora.yaml \
        --dataset_name data/map --output_dir data/map-qwen-qlora
"""

import logging

import numpy as np
from datasets import Dataset
from transformers import DataCollatorWithPadding, set_seed
from trl import ModelConfig, TrlParser

from misconceptions import (
    ClassifierConfig,
    ScriptArguments,
    WeightedLossTrainer,
    build_classifier_model,
    class_weights,
    cli_entry,
    finalize_classifier,
    label_suffix,
    load_dataset_any,
    map3_compute_metrics,
    map_frame,
    resolve_checkpoint,
    setup_logging,
    teacher_log_probs,
    texts_for,
)
from misconceptions.cli import parse_recipe_args, use_cpu_cores
from misconceptions.distillation import TEACHER_COLUMN
from misconceptions.hub import resolve_model_dir
from misconceptions.profiling import profile_callbacks


logger = logging.getLogger(__name__)


def train(script_args: ScriptArguments, training_args: ClassifierConfig, model_args: ModelConfig) -> None:
    # 1. Seed, logging, the CPU threads, and the checkpoint to resume from
    set_seed(training_args.seed)
    setup_logging(training_args)
    use_cpu_cores()
    logger.info("Script %s\nModel %s\nTraining %s", script_args, model_args, training_args)
    checkpoint = resolve_checkpoint(training_args)

    # 2. Data: texts and labels in the model's label space (and the teacher, found before any work)
    teacher = resolve_model_dir(training_args.teacher_model, "teacher_model") if training_args.teacher_model else None
    dataset = load_dataset_any(script_args.dataset_name)
    train_df = map_frame(dataset[script_args.dataset_train_split])
    eval_df = map_frame(dataset[script_args.dataset_test_split])
    to_target = label_suffix if training_args.label_target == "suffix" else str
    model_labels = sorted({to_target(label) for label in train_df["label"]})
    label2id = {label: i for i, label in enumerate(model_labels)}

    # 3. Model and tokenizer
    model, tokenizer = build_classifier_model(model_args, training_args, dict(enumerate(model_labels)))

    padding = "max_length" if training_args.pad_to_max_length else False

    def encode(df):
        texts = texts_for(df, training_args.text_template)
        # Eval rows whose label the training split never had cannot be scored in model space: -100 drops them.
        labels = [label2id.get(to_target(label), -100) for label in df["label"]]
        ds = Dataset.from_dict({"text": texts, "labels": labels})
        ds = ds.map(
            lambda b: tokenizer(b["text"], truncation=True, max_length=training_args.max_length, padding=padding),
            batched=True,
            remove_columns=["text"],
        )
        return ds.map(lambda b: {"length": [len(x) for x in b["input_ids"]]}, batched=True)

    with training_args.main_process_first(desc="tokenizing"):
        train_ds, eval_ds = encode(train_df), encode(eval_df.loc[eval_df["label"].map(to_target).isin(label2id)])
    if teacher:  # knowledge distillation: the teacher's log-probabilities ride with each row
        bf16 = bool(training_args.use_cpu and training_args.bf16)  # the student's CPU precision (cpu_bf16)
        targets = teacher_log_probs(teacher, train_df, model_labels, bf16=bf16, device=str(training_args.device))
        train_ds = train_ds.add_column(TEACHER_COLUMN, targets.tolist())

    # 4. Trainer with the class-weighted loss and MAP@3 for checkpoint selection
    weights = None
    if training_args.class_weighting == "balanced":
        weights = class_weights(np.array(train_ds["labels"]), len(model_labels))
    trainer = WeightedLossTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=map3_compute_metrics,
        class_weights=weights,
        distill_weight=training_args.distill_weight,  # used only on rows that carry a teacher's column
        distill_temperature=training_args.distill_temperature,
        callbacks=profile_callbacks(training_args),
    )

    # 5. Train (resuming), then save, card, full-pipeline evaluation and push
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    finalize_classifier(trainer, train_result, script_args, training_args, model_args, train_df, eval_df, model_labels)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    """Parse the recipe (`--config FILE`, or FILE first) and command-line overrides, then train."""
    train(*parse_recipe_args(TrlParser((ScriptArguments, ClassifierConfig, ModelConfig)), argv))


if __name__ == "__main__":
    main()
