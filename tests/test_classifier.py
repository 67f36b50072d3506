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
import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from misconceptions import InputError, LabelRanker, WeightedLossTrainer, class_weights, learn_question_table


FINAL = ["False_Misconception:Adding", "False_Neither:NA", "True_Correct:NA", "True_Neither:NA", "False_Correct:NA"]
QUESTIONS = {
    "1": {"correct_answer": "1/2", "labels": ["True_Correct:NA", "True_Neither:NA", "False_Misconception:Adding"]},
}


def test_question_table_learns_correct_answer_and_labels():
    df = pd.DataFrame(
        {
            "QuestionId": ["1", "1", "1", "2"],
            "MC_Answer": ["1/2", "1/2", "3", "7"],
            "label": ["True_Correct:NA", "True_Neither:NA", "False_Misconception:Adding", "False_Neither:NA"],
        }
    )
    table = learn_question_table(df)
    assert table["1"] == {"correct_answer": "1/2", "labels": sorted(df.label[:3])}
    assert table["2"]["correct_answer"] is None  # no True_ rows: the correct answer is unknown


def test_suffix_model_prefix_from_answer():
    suffixes = ["Correct:NA", "Misconception:Adding", "Neither:NA"]
    ranker = LabelRanker(suffixes, FINAL, QUESTIONS)
    probs = np.array([[0.2, 0.7, 0.1], [0.6, 0.1, 0.3]], dtype=np.float32)
    ranked = ranker.rank(probs, ["1", "1"], ["3", "1/2"], k=3)
    # Wrong answer: only False_ labels whose suffix was seen for the question, by probability.
    assert ranked[0] == ["False_Misconception:Adding", "False_Correct:NA", "False_Neither:NA"]
    # Correct answer: True_ labels first, by probability.
    assert ranked[1][:2] == ["True_Correct:NA", "True_Neither:NA"]
    assert all(len(r) == 3 for r in ranked)


def test_full_label_model_collapses_prefixes_when_deriving():
    ranker = LabelRanker(FINAL, FINAL, QUESTIONS, restrict_labels=False)
    probs = np.zeros((1, len(FINAL)), dtype=np.float32)
    probs[0, FINAL.index("True_Correct:NA")] = 0.3
    probs[0, FINAL.index("False_Correct:NA")] = 0.3  # together beat False_Neither's 0.4
    probs[0, FINAL.index("False_Neither:NA")] = 0.4
    assert ranker.rank(probs, ["1"], ["wrong"], k=1) == [["False_Correct:NA"]]
    plain = LabelRanker(FINAL, FINAL, QUESTIONS, restrict_labels=False, derive_prefix=False)
    assert plain.rank(probs, ["1"], ["wrong"], k=1) == [["False_Neither:NA"]]


def test_unknown_question_uses_all_labels():
    ranker = LabelRanker(FINAL, FINAL, QUESTIONS)
    probs = np.eye(len(FINAL), dtype=np.float32)[[3]]
    assert ranker.rank(probs, ["999"], ["x"], k=1) == [["True_Neither:NA"]]


def test_rank_of_many_rows_equals_each_row_alone():
    """All rows are ranked in one vectorized sort: mixed questions, answers, unknown questions and ties must give
    what ranking each row on its own gives."""
    suffixes = ["Correct:NA", "Misconception:Adding", "Neither:NA"]
    ranker = LabelRanker(suffixes, FINAL, QUESTIONS)
    rng = np.random.default_rng(0)
    probs = rng.random((40, len(suffixes))).astype(np.float32)
    probs[:5] = 0.25  # ties: broken by label order, as in a stable sort
    question_ids = rng.choice(["1", "999"], size=40).tolist()
    answers = rng.choice(["1/2", "3", "x"], size=40).tolist()
    ranked, scores = ranker.rank(probs, question_ids, answers, k=4, return_scores=True)
    for row in range(40):
        alone = ranker.rank(probs[row : row + 1], question_ids[row : row + 1], answers[row : row + 1], 4, True)
        assert (ranked[row], scores[row]) == (alone[0][0], alone[1][0])
    assert ranker.rank(np.zeros((0, 3), dtype=np.float32), [], [], k=3, return_scores=True) == ([], [])


def test_suffix_model_requires_derive_prefix():
    with pytest.raises(InputError, match="derive_prefix"):
        LabelRanker(["Correct:NA"], FINAL, QUESTIONS, derive_prefix=False)


def test_balanced_class_weights():
    weights = class_weights(np.array([0, 0, 0, 1]), num_labels=3)
    assert weights.tolist() == pytest.approx([4 / (2 * 3), 4 / (2 * 1), 1.0])


def test_weighted_loss_matches_manual_cross_entropy():
    class Tiny(torch.nn.Module):
        def forward(self, x):
            return {"logits": x}

    trainer = WeightedLossTrainer.__new__(WeightedLossTrainer)  # compute_loss needs only class_weights
    trainer.class_weights = torch.tensor([1.0, 3.0])
    logits = torch.tensor([[2.0, 0.5], [0.1, 0.3], [1.0, -1.0]])
    labels = torch.tensor([0, 1, 1])
    loss = trainer.compute_loss(Tiny(), {"x": logits, "labels": labels})
    per_row = F.cross_entropy(logits, labels, reduction="none")
    expected = (per_row * torch.tensor([1.0, 3.0, 3.0])).sum() / 7.0
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert WeightedLossTrainer.loss_is_scaled_for_ga is False


def test_distillation_loss_mixes_cross_entropy_and_tempered_kl():
    class Tiny(torch.nn.Module):
        def forward(self, x):
            return {"logits": x}

    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.3, 0.2]])
    teacher = torch.log_softmax(torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]]), dim=-1)
    labels = torch.tensor([0, 2])
    trainer = WeightedLossTrainer.__new__(WeightedLossTrainer)
    trainer.class_weights, trainer.distill_weight, trainer.distill_temperature = None, 0.25, 2.0
    loss = trainer.compute_loss(Tiny(), {"x": logits, "labels": labels, "teacher_logits": teacher})
    p_teacher = torch.softmax(teacher / 2.0, dim=-1)
    kl = (p_teacher * (torch.log(p_teacher) - torch.log_softmax(logits / 2.0, dim=-1))).sum(-1).mean()
    expected = 0.75 * F.cross_entropy(logits, labels) + 0.25 * 4.0 * kl
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # Without a teacher column (evaluation rows), or with weight 0, it is the plain cross-entropy.
    plain = F.cross_entropy(logits, labels).item()
    assert trainer.compute_loss(Tiny(), {"x": logits, "labels": labels}).item() == pytest.approx(plain, rel=1e-6)
    trainer.distill_weight = 0.0
    no_weight = trainer.compute_loss(Tiny(), {"x": logits, "labels": labels, "teacher_logits": teacher})
    assert no_weight.item() == pytest.approx(plain, rel=1e-6)


def test_4bit_layers_keep_training_after_an_eval_forward():
    """bitsandbytes repacks a 4-bit weight for CPU inference on its first eval forward (AVX512-BF16 CPUs) and the
    repacked kernel has no backward: after the fix, gradients still reach the input once evaluation has run."""
    import bitsandbytes as bnb

    from misconceptions.model_utils import keep_bnb_cpu_weights_trainable

    torch.manual_seed(0)
    layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(torch.randn(64, 64), requires_grad=False, quant_type="nf4")
    layer = layer.to("cpu")
    layer.support_avx512bf16_for_cpu = True  # as bitsandbytes sets it on such CPUs (this one too, if it has them)
    assert keep_bnb_cpu_weights_trainable(torch.nn.Sequential(layer)) == 1
    layer.eval()
    with torch.no_grad():
        evaluated = layer(torch.ones(2, 64))
    layer.train()
    x = torch.ones(2, 64, requires_grad=True)
    trained = layer(x)
    trained.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.allclose(evaluated, trained.detach())
