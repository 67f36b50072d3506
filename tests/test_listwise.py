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
"""The listwise reranker's pieces on SmolLM2-135M: sliding windows, prompt-length handling, SFT label masking, and
the option-logit scorer on a model trained for a few steps (a test file of its own, so a parallel test run can put
this long test beside the scripts' tests)."""

import itertools
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from trl import SFTConfig, SFTTrainer

from misconceptions import InputError, resolve_model_path
from misconceptions.listwise import (
    OPTION_LABELS,
    fit_candidates,
    listwise_messages,
    listwise_sft_rows,
    option_token_ids,
    prompt_ids,
    rerank_listwise,
    window_starts,
)
from misconceptions.rerank_model import Reranker
from misconceptions.settings import RerankerSettings


@pytest.fixture(scope="module")
def smollm2():
    path = resolve_model_path("builtin:SmolLM2-135M-Instruct")
    tokenizer = AutoTokenizer.from_pretrained(path)
    return path, tokenizer


def _frame(n_rows: int, n_candidates: int, gold_at: int = 0) -> tuple[pd.DataFrame, dict[int, str]]:
    names = {i: f"Misconception number {i} about fractions" for i in range(100)}
    rows = {
        "query": [f"Question {r}: what is 1/2 + 1/3?" for r in range(n_rows)],
        "candidate_ids": [list(range(r, r + n_candidates)) for r in range(n_rows)],
        "MisconceptionId": [r + gold_at for r in range(n_rows)],
    }
    frame = pd.DataFrame(rows)
    frame["candidate_names"] = [[names[i] for i in ids] for ids in frame["candidate_ids"]]
    return frame, names


# --- windows and prompt lengths ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "window", "stride"), [(25, 20, 10), (50, 20, 10), (7, 3, 3), (100, 20, 7), (5, 20, 5)])
def test_windows_and_strides_cover_every_candidate(n, window, stride):
    starts = window_starts(n, window, stride)
    covered = set()
    for start in starts:
        covered |= set(range(start, min(start + window, n)))
    assert covered == set(range(n)) and starts[-1] == 0  # every candidate scored; the last window is the top
    assert starts == sorted(starts, reverse=True)  # back to front, so good candidates climb
    assert all(a - b <= stride for a, b in itertools.pairwise(starts))  # consecutive windows overlap
    if n <= window:
        assert starts == [0]  # a window larger than the list: one window over all of it


def test_bad_windows_fail_clearly():
    with pytest.raises(InputError, match="larger than window"):
        window_starts(30, 5, 6)
    with pytest.raises(InputError, match="window must be >= 2"):
        window_starts(30, 1, 1)


def test_long_prompts_drop_candidates_never_the_question(smollm2, caplog):
    _, tokenizer = smollm2
    query = "<Question> " + "What is 3/4 of 48? " * 10
    names = [f"Believes that candidate {i} is a long description of a misconception " * 2 for i in range(20)]
    full = len(prompt_ids(tokenizer, listwise_messages(query, names)))
    kept = fit_candidates(tokenizer, query, names, max_length=full // 2)
    assert 1 <= kept < 20
    assert len(prompt_ids(tokenizer, listwise_messages(query, names[:kept]))) + 2 <= full // 2
    assert len(prompt_ids(tokenizer, listwise_messages(query, names[: kept + 1]))) + 2 > full // 2
    assert fit_candidates(tokenizer, query, names, max_length=40) == 0  # the query alone does not fit
    # Training rows: the gold candidate survives the cut, and the cut is reported.
    frame = pd.DataFrame(
        {"query": [query], "candidate_ids": [list(range(20))], "candidate_names": [names], "MisconceptionId": [19]}
    )
    with caplog.at_level(logging.WARNING):
        rows, truncated = listwise_sft_rows(frame, dict(enumerate(names)), 20, tokenizer, full // 2, seed=0)
    content = rows[0]["prompt"][0]["content"]
    assert truncated == 1 and "1 of 1 rows lost candidates" in caplog.text and query in content
    letter = rows[0]["completion"][0]["content"]
    assert f"{letter}. {names[19]}" in content
    # A row whose query alone is too long is left out of training, and counted.
    rows, dropped = listwise_sft_rows(frame, dict(enumerate(names)), 20, tokenizer, 40, seed=0)
    assert len(rows) == 0 and dropped == 1


# --- SFT labels ----------------------------------------------------------------------------------------------------
def test_sft_labels_mask_every_prompt_token_and_keep_the_completion(smollm2, tmp_path):
    path, tokenizer = smollm2
    frame, names = _frame(6, 8, gold_at=3)
    rows, _ = listwise_sft_rows(frame, names, 8, tokenizer, max_length=512, seed=0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    args = SFTConfig(
        output_dir=str(tmp_path), max_length=512, completion_only_loss=True, report_to="none", use_cpu=True, bf16=False
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
    letters = option_token_ids(tokenizer, len(OPTION_LABELS))
    for raw, tokenized in zip(rows, trainer.train_dataset, strict=True):
        prompt = prompt_ids(tokenizer, raw["prompt"])
        ids, labels = tokenized["input_ids"], tokenized["labels"]
        assert ids[: len(prompt)] == prompt  # the scorer's prompt is exactly the trained one
        assert labels[: len(prompt)] == [-100] * len(prompt)  # every prompt token masked
        assert labels[len(prompt) :] == ids[len(prompt) :] and len(ids) > len(prompt)  # the completion kept
        letter = raw["completion"][0]["content"]
        assert ids[len(prompt)] == letters[OPTION_LABELS.index(letter)]  # the first learned token is the letter
        batch = trainer.data_collator([tokenized])  # and the collator hands the model these labels
        assert batch["labels"][0].tolist() == labels


# --- option-logit scorer -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_option_logit_scorer_ranks_a_planted_candidate_first(smollm2, tmp_path):
    """A few SFT steps teach SmolLM2 to pick the line marked PLANTED; the scorer must then put it first from any
    position, including one the first window does not see (it climbs through the sliding windows)."""
    path, tokenizer = smollm2
    set_seed(0)
    rng = np.random.default_rng(0)
    distractors = [f"Confuses {w} with {v}" for w in ("area", "perimeter", "volume", "mass") for v in ("sum", "mean")]
    planted = "PLANTED: this is the right misconception"
    prompts, completions = [], []
    for i in range(48):
        options = list(rng.choice(distractors, 5, replace=False))
        at = i % 6
        options.insert(at, planted)
        prompts.append(listwise_messages(f"<Question> item {i}", options))
        completions.append([{"role": "assistant", "content": OPTION_LABELS[at]}])
    from datasets import Dataset

    rows = Dataset.from_dict({"prompt": prompts, "completion": completions})
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_length=256,
        completion_only_loss=True,
        report_to="none",
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        per_device_train_batch_size=8,
        max_steps=12,
        learning_rate=2e-4,
        logging_steps=4,
        save_strategy="no",
        seed=0,
    )
    SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer).train()
    model.eval()
    reranker = Reranker("listwise", model, tokenizer, RerankerSettings(max_length=256))
    names = [distractors[j % len(distractors)] for j in range(11)]
    for position in (0, 4, 10):
        candidates = names[:position] + [planted] + names[position:]
        flat = [np.zeros(len(candidates))]
        order = rerank_listwise(reranker, ["<Question> new item"], [candidates], flat, window=6, stride=3)[0]
        assert sorted(order.tolist()) == list(range(len(candidates)))  # a permutation: nothing lost or repeated
        assert candidates[order[0]] == planted, (position, [candidates[j] for j in order[:3]])
