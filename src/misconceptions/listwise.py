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
"""The listwise Eedi reranker (the Eedi reference solution's exp015): a causal LM sees the query and a lettered list
of candidates and names the right letter.

Trained with TRL's `SFTTrainer` on conversational prompt/completion rows (`listwise_sft_rows`, loss on the
completion only); scored in one forward pass from the logits of the letter tokens at the answer position
(`option_logprobs`), with RankGPT-style sliding windows (back to front) when there are more candidates than one
prompt holds (`rerank_listwise`). Prompts are fitted to `max_length` by dropping trailing candidates, never the query.
"""

import logging
import string
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from scipy.special import log_softmax
from tqdm.auto import tqdm

from .errors import InputError
from .model_utils import (
    device_map_for_quantized,
    keep_bnb_cpu_weights_trainable,
    resolve_model_path,
    torch_dtype,
    training_quantization_config,
)
from .rerank_model import Reranker, blend


logger = logging.getLogger(__name__)

OPTION_LABELS = string.ascii_uppercase  # single tokens in the Llama/Qwen/SmolLM2 vocabularies (checked at load)
LISTWISE_INSTRUCTION = (
    "Below is a math question with a student's incorrect answer, then a list of misconceptions. Which misconception "
    "led to the incorrect answer? Reply with its letter only."
)


def listwise_messages(query: str, names: Sequence[str]) -> list[dict[str, str]]:
    """The user turn: instruction, query, and the candidates lettered A, B, C, ..."""
    if len(names) > len(OPTION_LABELS):
        raise InputError(f"a listwise prompt holds at most {len(OPTION_LABELS)} candidates, got {len(names)}")
    options = "\n".join(f"{OPTION_LABELS[i]}. {name}" for i, name in enumerate(names))
    return [{"role": "user", "content": f"{LISTWISE_INSTRUCTION}\n\n{query}\n\nMisconceptions:\n{options}"}]


def prompt_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of the prompt up to the answer position, exactly as TRL's SFTTrainer tokenizes a prompt."""
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(encoded["input_ids"])


def option_token_ids(tokenizer, n: int) -> list[int]:
    """Token id of each option letter as the first token of the answer; every letter must be a single token."""
    ids = []
    for label in OPTION_LABELS[:n]:
        tokens = tokenizer.encode(label, add_special_tokens=False)
        if len(tokens) != 1:
            raise InputError(f"option label '{label}' is {len(tokens)} tokens for this tokenizer; it must be one")
        ids.append(tokens[0])
    return ids


def fit_candidates(tokenizer, query: str, names: Sequence[str], max_length: int) -> int:
    """How many leading candidates fit in `max_length` tokens with the answer; the query is never cut.

    0 means the query alone (with the instruction and one candidate) does not fit: training leaves such a row out,
    inference keeps the retriever's order for it, and both say how many rows that was.
    """
    return fit_prompt(tokenizer, query, names, max_length)[0]


def fit_prompt(tokenizer, query: str, names: Sequence[str], max_length: int) -> tuple[int, list[int]]:
    """`fit_candidates`, and the token ids of the prompt it settled on (none when 0), so they are not made twice."""
    prompts: dict[int, list[int]] = {}

    def fits(n: int) -> bool:
        prompts[n] = prompt_ids(tokenizer, listwise_messages(query, names[:n]))
        return len(prompts[n]) + 2 <= max_length  # answer letter + end of turn

    if fits(len(names)):
        return len(names), prompts[len(names)]
    if not fits(1):
        return 0, []
    low, high = 1, len(names)  # low fits, high does not
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low, prompts[low]


def listwise_sft_rows(
    frame: pd.DataFrame, names: dict[int, str], num_candidates: int, tokenizer, max_length: int, seed: int = 42
) -> tuple[Dataset, int]:
    """Conversational prompt/completion rows: the top `num_candidates` candidates (the gold one put in place of the
    last when retrieval missed it), shuffled, lettered; the completion is the gold letter.

    Candidates that would push the prompt past `max_length` are dropped (never the gold one, never the query); a
    row whose query alone is too long is left out. Returns the dataset and how many rows lost candidates or were
    left out.
    """
    rng = np.random.default_rng(seed)
    prompts, completions, truncated, too_long = [], [], 0, 0
    for query, ids, cand_names, gold in zip(
        frame["query"], frame["candidate_ids"], frame["candidate_names"], frame["MisconceptionId"], strict=True
    ):
        pool = list(zip(ids, cand_names, strict=True))[:num_candidates]
        gold = int(gold)
        if all(i != gold for i, _ in pool):
            pool[-1] = (gold, names[gold])
        order = rng.permutation(len(pool))
        pool = [pool[j] for j in order]
        kept = fit_candidates(tokenizer, query, [n for _, n in pool], max_length)
        if kept == 0:
            too_long += 1
            continue
        if kept < len(pool):
            truncated += 1
            gold_at = next(j for j, (i, _) in enumerate(pool) if i == gold)
            if gold_at >= kept:  # keep the gold candidate: swap it into the kept part
                pool[kept - 1], pool[gold_at] = pool[gold_at], pool[kept - 1]
            pool = pool[:kept]
        letter = OPTION_LABELS[next(j for j, (i, _) in enumerate(pool) if i == gold)]
        prompts.append(listwise_messages(query, [n for _, n in pool]))
        completions.append([{"role": "assistant", "content": letter}])
    if truncated or too_long:
        logger.warning(
            "Listwise prompts over max_length %d: %d of %d rows lost candidates (the query and the gold one are "
            "kept); %d rows whose query alone is too long were left out",
            max_length,
            truncated,
            len(frame),
            too_long,
        )
    return Dataset.from_dict({"prompt": prompts, "completion": completions}), truncated + too_long


def window_starts(n: int, window: int, stride: int) -> list[int]:
    """Start of each window, back to front (RankGPT): the last window ends at n, the first starts at 0, and
    consecutive windows overlap by window - stride, so every candidate is scored and good ones can climb to the top.
    """
    if window < 2 or stride < 1:
        raise InputError(f"window must be >= 2 and stride >= 1, got window {window}, stride {stride}")
    if stride > window:
        raise InputError(
            f"stride {stride} is larger than window {window}: candidates between windows would be skipped"
        )
    if n <= window:  # a window larger than the list: one window over all of it
        return [0]
    starts = list(range(n - window, 0, -stride))
    return [*starts, 0]


@torch.inference_mode()
def option_logprobs(model, tokenizer, prompts: list[list[int]], n_options: list[int]) -> list[np.ndarray]:
    """Log-softmax over the first n option letters at the answer position, one forward pass per prompt batch."""
    option_ids = option_token_ids(tokenizer, max(n_options))
    device = next(model.parameters()).device
    batch = tokenizer.pad({"input_ids": prompts}, padding=True, return_tensors="pt", padding_side="left")
    logits = model(
        input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device), logits_to_keep=1
    ).logits[:, -1, :]
    chosen = logits[:, option_ids].float().cpu().numpy()
    return [log_softmax(row[:n].astype(np.float64)) for row, n in zip(chosen, n_options, strict=True)]


def rerank_listwise(
    reranker: Reranker,
    queries: Sequence[str],
    candidate_names: Sequence[Sequence[str]],
    retriever_scores: Sequence[np.ndarray],
    window: int,
    stride: int,
    blend_weight: float = 0.0,
    retriever_scale: float = 20.0,
    batch_size: int = 8,
    max_length: int | None = None,
) -> list[np.ndarray]:
    """New order (indices into each candidate list) by sliding windows, back to front, batched across queries."""
    orders = [np.arange(len(names)) for names in candidate_names]
    starts = [window_starts(len(names), window, stride) for names in candidate_names]
    max_length = max_length or reranker.settings.max_length or 4096
    rounds = max(len(s) for s in starts)
    clipped = 0
    progress = tqdm(total=sum(len(s) for s in starts), desc="Listwise windows", unit="window")
    for r in range(rounds):
        active = [q for q in range(len(queries)) if r < len(starts[q])]
        for chunk_start in range(0, len(active), batch_size):
            chunk = active[chunk_start : chunk_start + batch_size]
            prompts, spans = [], []
            for q in chunk:
                lo = starts[q][r]
                members = orders[q][lo : lo + window]
                names = [candidate_names[q][j] for j in members]
                kept, ids = fit_prompt(reranker.tokenizer, queries[q], names, max_length)
                clipped += kept < len(names)
                if kept < 2:  # nothing to compare (or the query alone is too long): the window keeps its order
                    continue
                prompts.append(ids)
                spans.append((q, lo, members[:kept]))
            if not prompts:
                progress.update(len(chunk))
                continue
            logprobs = option_logprobs(reranker.model, reranker.tokenizer, prompts, [len(m) for _, _, m in spans])
            for (q, lo, members), lp in zip(spans, logprobs, strict=True):
                scores = blend(lp, np.asarray(retriever_scores[q])[members], blend_weight, retriever_scale)
                orders[q][lo : lo + len(members)] = members[np.argsort(-scores, kind="stable")]
            progress.update(len(chunk))
    progress.close()
    if clipped:
        logger.warning(
            "%d windows were over max_length %d: their last candidates (all of them when the query alone is too "
            "long) kept their order",
            clipped,
            max_length,
        )
    return orders


def build_listwise_model(model_args, training_args):
    """(causal LM, tokenizer, LoRA config or None): optional 4-bit base; SFTTrainer applies the LoRA config."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import get_peft_config

    path = resolve_model_path(model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=model_args.model_revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise InputError(f"{model_args.model_name_or_path}: the listwise reranker needs a tokenizer chat template")
    option_token_ids(tokenizer, len(OPTION_LABELS))  # fail early if a letter is not one token
    quantization_config = training_quantization_config(model_args)
    peft_config = get_peft_config(model_args)
    if quantization_config is not None and peft_config is None:
        raise InputError("a 4-bit or 8-bit base model can only be trained with LoRA: set use_peft: true")
    if peft_config is not None and peft_config.task_type != "CAUSAL_LM":
        raise InputError(f"lora_task_type must be CAUSAL_LM for the listwise reranker, got '{peft_config.task_type}'")
    model = AutoModelForCausalLM.from_pretrained(
        path,
        revision=model_args.model_revision,
        dtype=torch_dtype(model_args.dtype),
        attn_implementation=model_args.attn_implementation,
        quantization_config=quantization_config,
        device_map=device_map_for_quantized() if quantization_config is not None else None,
    )
    keep_bnb_cpu_weights_trainable(model)
    return model, tokenizer, peft_config
