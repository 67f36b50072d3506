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
"""MAP classification: label spaces, the weighted-loss Trainer, model loading, fast prediction and label ranking.

A classifier predicts either the full `Category:Misconception` labels (`label_target="label"`, the MAP reference solution) or their
37 suffixes (`"suffix"`: `Correct:NA`, `Misconception:X`, `Neither:NA`). `LabelRanker` turns its probabilities
into ranked competition labels, optionally restricted to labels seen for the question and with the `True_`/`False_`
prefix derived from whether the chosen answer is the question's correct one (both learned from training rows and
saved beside the model as `ClassifierSettings`).
"""

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch.nn import functional as F
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, Trainer

from .data import MAP_PROMPT_TEMPLATE, map_prompt
from .distillation import TEACHER_COLUMN, distillation_kl
from .errors import InputError
from .io_utils import atomic_path
from .metrics import map_at_k, map_at_k_from_scores
from .model_utils import (
    device_map_for_quantized,
    keep_bnb_cpu_weights_trainable,
    load_model_or_adapter,
    resolve_model_path,
    torch_dtype,
    training_quantization_config,
)
from .onnx_backend import load_onnx_classifier, resolve_backend
from .plots import PLOTS_DIR, plot_map
from .settings import ClassifierSettings, model_dtype, quantization_of
from .tfidf import fit_tfidf_classifier, load_tfidf, save_tfidf, tfidf_probs
from .training import RunCard, finalize_run


logger = logging.getLogger(__name__)

CLASSIFIER_META = ClassifierSettings.FILE


def label_prefix(label: str) -> str:
    """`True_Misconception:X` -> `True`."""
    return label.split("_", 1)[0]


def label_suffix(label: str) -> str:
    """`True_Misconception:X` -> `Misconception:X`."""
    return label.split("_", 1)[1]


def learn_question_table(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per QuestionId: the correct answer (the MC_Answer most often labelled `True_`) and every label seen."""
    table = {}
    for question_id, rows in df.groupby("QuestionId", sort=True):
        true_votes = Counter(rows.loc[rows["label"].str.startswith("True_"), "MC_Answer"])
        table[str(question_id)] = {
            "correct_answer": true_votes.most_common(1)[0][0] if true_votes else None,
            "labels": sorted(rows["label"].unique()),
        }
    return table


def class_weights(labels: np.ndarray, num_labels: int) -> torch.Tensor:
    """sklearn's balanced weights n / (k * count) for classes present; absent classes keep weight 1."""
    weights = np.ones(num_labels, dtype=np.float32)
    present = np.unique(labels)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return torch.tensor(weights)


class WeightedLossTrainer(Trainer):
    """The MAP reference solution's custom Trainer: cross-entropy with per-class weights (None = plain cross-entropy),
    plus, where the training rows carry a teacher's log-probabilities (`teacher_logits`), Hinton's distillation term:
    (1 - w) * CE + w * T^2 * KL(teacher_T || model_T)."""

    # compute_loss returns a per-micro-batch mean, so Trainer must still divide it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        *args,
        class_weights: torch.Tensor | None = None,
        distill_weight: float = 0.0,
        distill_temperature: float = 1.0,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights
        self.distill_weight = distill_weight
        self.distill_temperature = distill_temperature

    def _set_signature_columns_if_needed(self) -> None:
        # The teacher's column is no argument of the model's forward; keep it for compute_loss.
        super()._set_signature_columns_if_needed()
        if TEACHER_COLUMN not in self._signature_columns:
            self._signature_columns.append(TEACHER_COLUMN)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        teacher = inputs.pop(TEACHER_COLUMN, None)
        outputs = model(**inputs)
        logits = outputs["logits"].float()
        weight = self.class_weights.to(logits.device) if self.class_weights is not None else None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1), weight=weight)
        if teacher is not None and self.distill_weight > 0:
            kl = distillation_kl(logits, teacher.to(logits.device), self.distill_temperature)
            loss = (1 - self.distill_weight) * loss + self.distill_weight * kl
        return (loss, outputs) if return_outputs else loss


def map3_compute_metrics(eval_pred) -> dict[str, float]:
    """`compute_metrics` for Trainer: MAP@3 in the model's own label space (used to pick the best checkpoint)."""
    logits, labels = eval_pred
    logits = logits[0] if isinstance(logits, tuple) else logits
    return {"map@3": map_at_k_from_scores(labels, logits, k=3)}


class LabelRanker:
    """Rank competition labels for rows from model probabilities, with the question-aware options."""

    def __init__(
        self,
        model_labels: list[str],
        final_labels: list[str],
        questions: dict[str, dict[str, Any]],
        restrict_labels: bool = True,
        derive_prefix: bool = True,
    ):
        self.final_labels = list(final_labels)
        self.questions = questions
        self.restrict_labels = restrict_labels
        self.derive_prefix = derive_prefix
        suffix_model = all(label_prefix(m) not in ("True", "False") for m in model_labels)
        if suffix_model and not derive_prefix:
            raise InputError("this model predicts label suffixes, so it needs derive_prefix (the True_/False_ rule)")
        # mapping[i, j] = 1 when model label i supports final label j. Where the prefix is derived from the answer, a
        # full-label model's True_X and False_X both support X; where it cannot be (unknown question), they do not.
        index = {m: i for i, m in enumerate(model_labels)}
        self.mapping_derived = np.zeros((len(model_labels), len(self.final_labels)), dtype=np.float32)
        self.mapping_direct = np.zeros_like(self.mapping_derived)
        for j, final in enumerate(self.final_labels):
            if suffix_model:
                derived = direct = [label_suffix(final)]
            else:
                derived = [f"{p}_{label_suffix(final)}" for p in ("True", "False")] if derive_prefix else [final]
                direct = [final]
            for mapping, sources in ((self.mapping_derived, derived), (self.mapping_direct, direct)):
                for source in sources:
                    if source in index:
                        mapping[index[source], j] = 1.0
        self._prefix = np.array([label_prefix(f) for f in self.final_labels])
        self._suffix = np.array([label_suffix(f) for f in self.final_labels])

    @classmethod
    def from_settings(
        cls, settings: ClassifierSettings, restrict_labels: bool | None = None, derive_prefix: bool | None = None
    ) -> "LabelRanker":
        """The ranker a trained classifier saved (its labels, questions and options); an option given here wins."""
        return cls(
            model_labels=settings.model_labels,
            final_labels=settings.labels,
            questions=settings.questions,
            restrict_labels=settings.restrict_labels if restrict_labels is None else restrict_labels,
            derive_prefix=settings.derive_prefix if derive_prefix is None else derive_prefix,
        )

    def allowed(self, question_id: str, answer: str) -> tuple[np.ndarray, bool]:
        """Mask of final labels allowed for one row (all where the question is unknown), and whether the prefix
        was derived."""
        info = self.questions.get(str(question_id))
        mask = np.ones(len(self.final_labels), dtype=bool)
        if info is None:
            return mask, False
        derived = self.derive_prefix and info.get("correct_answer") is not None
        if derived:
            mask &= self._prefix == ("True" if answer == info["correct_answer"] else "False")
        if self.restrict_labels:
            mask &= np.isin(self._suffix, [label_suffix(lab) for lab in info["labels"]])
        return mask, derived

    def rank(
        self, probs: np.ndarray, question_ids: list[str], answers: list[str], k: int = 3, return_scores: bool = False
    ) -> list[list[str]] | tuple[list[list[str]], list[list[float]]]:
        """Top-k labels per row: allowed labels first by score, then the rest by score (so there are always k).

        With `return_scores`, also each ranked label's score (the summed probability of the model labels behind it).
        The masks are computed once per (question, answer) pair and all rows are sorted in one `np.lexsort`.
        """
        rows = list(zip(question_ids, answers, strict=True))
        pair_index = {pair: i for i, pair in enumerate(dict.fromkeys(rows))}  # unique (question, answer) pairs
        masks, derived = zip(*(self.allowed(*pair) for pair in pair_index), strict=True) if rows else ((), ())
        which = np.fromiter((pair_index[pair] for pair in rows), dtype=np.int64, count=len(rows))
        allowed = np.asarray(masks, dtype=bool).reshape(-1, len(self.final_labels))[which]
        derived_rows = np.asarray(derived, dtype=bool)[which][:, None]
        scores = np.where(derived_rows, probs @ self.mapping_derived, probs @ self.mapping_direct)
        order = np.lexsort((-scores, ~allowed), axis=-1)[:, :k]
        labels = np.asarray(self.final_labels, dtype=object)
        ranked = labels[order].tolist()
        if not return_scores:
            return ranked
        return ranked, np.take_along_axis(scores, order, axis=1).astype(float).tolist()


@torch.inference_mode()
def predict_probs(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
    """Softmax probabilities for texts, batched by length with dynamic padding (no padding to max_length)."""
    model.eval()
    encodings = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    order = np.argsort([len(e) for e in encodings], kind="stable")
    device = next(model.parameters()).device
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    for start in tqdm(
        range(0, len(order), batch_size), desc="Predicting", unit="batch", disable=len(order) <= batch_size
    ):
        idx = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [encodings[i] for i in idx]}, return_tensors="pt").to(device)
        logits = model(**batch).logits.float()
        out[idx] = torch.softmax(logits, dim=-1).cpu().numpy()
    return out


@dataclass
class Classifier:
    """A trained classifier: the model, its tokenizer, its saved settings, the optional TF-IDF blend, and the
    inference backend (`onnx` holds the ONNX Runtime session of the `onnx`/`onnx-int8` backends, else None)."""

    model: Any
    tokenizer: Any
    settings: ClassifierSettings
    tfidf: Any = None
    backend: str = "torch"
    onnx: Any = None

    def predict_probs(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """The model's probabilities for texts, on the loaded backend."""
        if self.onnx is not None:
            return self.onnx.predict_probs(texts, self.settings.max_length, batch_size)
        return predict_probs(self.model, self.tokenizer, texts, self.settings.max_length, batch_size)


def load_classifier(model_dir: str, backend: str = "torch") -> Classifier:
    """Load a trained classifier folder: a full model, or a LoRA adapter on its (possibly 4-bit) base model.

    `backend`: `torch`, `onnx`, `onnx-int8` or `auto` (see `onnx_backend`); a model that ONNX cannot run falls back to
    torch with a one-line warning.
    """
    backend = resolve_backend(backend)
    path = Path(model_dir)
    settings = ClassifierSettings.load(path)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = None
    if (path / "adapter_config.json").is_file():  # the labels come from the saved config, not the base model's
        config = AutoConfig.from_pretrained(model_dir)
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # re-applied from the saved settings
    model = load_model_or_adapter(AutoModelForSequenceClassification, model_dir, settings, config=config)
    tfidf = load_tfidf(model_dir) if settings.tfidf_weight > 0 else None
    onnx = load_onnx_classifier(model, tokenizer, model_dir, backend) if backend != "torch" else None
    return Classifier(model, tokenizer, settings, tfidf, backend if onnx is not None else "torch", onnx)


def texts_for(df: pd.DataFrame, template: str | None) -> list[str]:
    """Model input text: the template over the row's columns, or the MAP reference solution's prompt."""
    return map_prompt(df, template or MAP_PROMPT_TEMPLATE).tolist()


def rank_dataframe(
    classifier: Classifier,
    df: pd.DataFrame,
    top_k: int = 3,
    restrict_labels: bool | None = None,
    derive_prefix: bool | None = None,
    batch_size: int = 64,
    return_scores: bool = False,
) -> list[list[str]] | tuple[list[list[str]], list[list[float]]]:
    """Ranked labels for validated MAP rows with a loaded classifier; options default to the model's saved choice.

    With `return_scores`, also the blended probability behind each ranked label (see `LabelRanker.rank`).
    """
    settings = classifier.settings
    ranker = LabelRanker.from_settings(settings, restrict_labels, derive_prefix)
    texts = texts_for(df, settings.text_template)
    probs = classifier.predict_probs(texts, batch_size)
    if classifier.tfidf is not None:
        weight = settings.tfidf_weight
        probs = (1 - weight) * probs + weight * tfidf_probs(classifier.tfidf, texts, settings.model_labels)
    question_ids, answers = df["QuestionId"].astype(str).tolist(), df["MC_Answer"].tolist()
    return ranker.rank(probs, question_ids, answers, k=top_k, return_scores=return_scores)


def build_classifier_model(model_args, training_args, id2label: dict[int, str]):
    """AutoModelForSequenceClassification for encoders and decoders, optionally 4-bit (QLoRA) and/or LoRA.

    Returns (model, tokenizer). Decoders get a pad token on the tokenizer and the model config (the head reads the
    last non-pad token). With LoRA the new head stays trainable and is saved with the adapter.
    """
    from peft import get_peft_model, prepare_model_for_kbit_training
    from trl import get_peft_config

    path = resolve_model_path(model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(
        path, revision=model_args.model_revision, trust_remote_code=getattr(training_args, "trust_remote_code", False)
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    quantization_config = training_quantization_config(model_args)
    dtype = torch_dtype(model_args.dtype)
    model = AutoModelForSequenceClassification.from_pretrained(
        path,
        revision=model_args.model_revision,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        dtype=dtype,
        attn_implementation=model_args.attn_implementation,
        quantization_config=quantization_config,
        device_map=device_map_for_quantized() if quantization_config is not None else None,
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    keep_bnb_cpu_weights_trainable(model)
    peft_config = get_peft_config(model_args)
    if peft_config is not None:
        if peft_config.task_type != "SEQ_CLS":
            raise InputError(f"lora_task_type must be SEQ_CLS for a classifier, got '{peft_config.task_type}'")
        if quantization_config is not None:
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=training_args.gradient_checkpointing
            )
        # PEFT's SEQ_CLS task already keeps the head ("score"/"classifier") trainable and saves it.
        model = get_peft_model(model, peft_config)
        model.print_trainable_parameters()
    elif quantization_config is not None:
        raise InputError("a 4-bit or 8-bit base model can only be trained with LoRA: set use_peft: true")
    return model, tokenizer


def finalize_classifier(
    trainer,
    train_result,
    script_args,
    training_args,
    model_args,
    train_df: pd.DataFrame,
    eval_df: pd.DataFrame,
    model_labels: list[str],
) -> dict[str, float]:
    """`finalize_run` for a classifier: its settings (label space, question table, template), the TF-IDF blend, and
    MAP@3 of the full ranking pipeline on the validation rows, as predict_classifier.py computes it."""
    settings = ClassifierSettings(
        base_model=model_args.model_name_or_path,
        dataset=script_args.dataset_name,
        dtype=model_dtype(model_args.dtype),
        quantization=quantization_of(trainer.model),
        label_target=training_args.label_target,
        model_labels=model_labels,
        labels=sorted(set(train_df["label"])),
        questions=learn_question_table(train_df),
        question_texts=train_df.groupby("QuestionId", sort=True)["QuestionText"].first().astype(str).to_dict(),
        text_template=training_args.text_template,
        max_length=training_args.max_length,
        restrict_labels=training_args.restrict_labels,
        derive_prefix=training_args.derive_prefix,
        tfidf_weight=training_args.tfidf_weight,
    )
    model = trainer.model

    def evaluate(output_dir: Path) -> dict[str, float]:
        if hasattr(model, "peft_config"):  # the adapter folder also needs the base config with id2label
            model.config.save_pretrained(output_dir)
        tfidf = None
        if training_args.tfidf_weight > 0:
            logger.info("Fitting the TF-IDF + logistic-regression blend on %d rows", len(train_df))
            to_target = label_suffix if training_args.label_target == "suffix" else str
            tfidf = fit_tfidf_classifier(
                texts_for(train_df, training_args.text_template),
                [to_target(label) for label in train_df["label"]],
                seed=training_args.seed,
            )
            save_tfidf(tfidf, output_dir)
        # Evaluate exactly what predict_classifier.py will output, with the saved options.
        classifier = Classifier(model, trainer.processing_class, settings, tfidf)
        ranked = rank_dataframe(classifier, eval_df, top_k=3, batch_size=training_args.per_device_eval_batch_size)
        predictions = pd.DataFrame(
            {"row_id": eval_df["row_id"], "Category:Misconception": [" ".join(r) for r in ranked]}
        )
        with atomic_path(output_dir / "eval_predictions.csv") as tmp:
            predictions.to_csv(tmp, index=False)
        plot_map(eval_df["label"].tolist(), ranked, output_dir / PLOTS_DIR, k=3)
        return {"eval_map@3": map_at_k(eval_df["label"].tolist(), ranked, k=3), "eval_samples": len(eval_df)}

    card = RunCard(
        title="MAP classifier",
        task="MAP misconception classification (question + chosen answer + explanation -> Category:Misconception)",
        usage="python scripts/predict_classifier.py --model MODEL --input_csv test.csv --output_csv submission.csv",
        tags=["map", "text-classification"],
        headline="eval_map@3",
        headline_label="eval MAP@3",
        library_name="peft" if hasattr(model, "peft_config") else "transformers",
        trainer_card={
            "finetuned_from": model_args.model_name_or_path,
            "dataset": script_args.dataset_name,
            "tags": ["misconceptions", "map", "text-classification"],
        },
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
