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
"""Knowledge distillation for the MAP classifier: a trained teacher's log-probabilities on the training rows, and the
term that makes a (smaller, faster) model learn them, Hinton's T^2-scaled KL at temperature T."""

import logging

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from .errors import InputError


logger = logging.getLogger(__name__)

TEACHER_COLUMN = "teacher_logits"


def distillation_kl(logits: torch.Tensor, teacher_log_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher_T || model_T), the batch mean: the distillation term, on the scale of a cross-entropy."""
    t = temperature
    kl = F.kl_div(
        F.log_softmax(logits / t, dim=-1),
        F.log_softmax(teacher_log_probs.float() / t, dim=-1),
        log_target=True,
        reduction="batchmean",
    )
    return t * t * kl


def teacher_log_probs(
    teacher_dir: str, df: pd.DataFrame, model_labels: list[str], bf16: bool = False, device: str | None = None
) -> np.ndarray:
    """A trained classifier's log-probabilities for the rows of `df`, columns in `model_labels` order: the targets of
    knowledge distillation. The teacher reads each row with its own template, tokenizer and encoder (it may be a
    larger model than the student) and must know every one of the student's labels; `bf16` runs it under CPU bf16
    autocast; `device` (the student's, e.g. `cuda:0`) is where a full-precision teacher scores (a 4-bit one stays
    where its device map put it). The transformer alone: a teacher's TF-IDF blend is not part of its targets."""
    from .classifier import load_classifier, texts_for  # here: classifier imports this module

    teacher = load_classifier(teacher_dir, backend="torch")
    if device is not None and not getattr(teacher.model, "is_quantized", False):
        teacher.model.to(device)
    index = {label: i for i, label in enumerate(teacher.settings.model_labels)}
    missing = [label for label in model_labels if label not in index]
    if missing:
        raise InputError(
            f"teacher_model {teacher_dir}: it has no label(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}; a "
            "teacher must be trained on the same dataset and label_target as the model it teaches"
        )
    logger.info("Teacher %s: scoring %d training rows (bf16: %s)", teacher_dir, len(df), bf16)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        probs = teacher.predict_probs(texts_for(df, teacher.settings.text_template))
    probs = probs[:, [index[label] for label in model_labels]]
    probs /= probs.sum(axis=1, keepdims=True)  # a teacher with extra labels: renormalized over the student's
    return np.log(np.clip(probs, 1e-12, None)).astype(np.float32)
