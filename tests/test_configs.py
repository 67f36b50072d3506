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
"""Every recipe parses with its script's parser, so a stale or misspelled key fails here."""

import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml
from trl import ModelConfig, TrlParser

from misconceptions import ClassifierConfig, RerankerConfig, RetrieverConfig, ScriptArguments
from misconceptions.cli import parse_recipe_args
from misconceptions.configs import FoldOptions, HubOptions, OutputOptions, parse_mixture

from .conftest import REPO, run_script


PARSERS = {
    "map": (ScriptArguments, ClassifierConfig, ModelConfig),
    "eedi": (ScriptArguments, RetrieverConfig, ModelConfig),
}
RERANKER_PARSER = (ScriptArguments, RerankerConfig, ModelConfig)
RECIPES = sorted((REPO / "recipes").glob("*/*.yaml"))
# scripts/generate_synthetic.py's recipes (generation settings, not training arguments)
SYNTHETIC_RECIPES = [r for r in RECIPES if r.name.startswith("synthetic-")]
# scripts/run_pipeline.py's recipes (steps over the other recipes)
PIPELINE_RECIPES = [r for r in RECIPES if r.name == "pipeline.yaml"]
TRAINING_RECIPES = [r for r in RECIPES if r not in SYNTHETIC_RECIPES and r not in PIPELINE_RECIPES]


def parser_for(recipe: Path):
    types = PARSERS.get(recipe.parent.name)
    if recipe.parent.name == "eedi" and "reranker_type" in yaml.safe_load(recipe.read_text()):
        types = RERANKER_PARSER  # scripts/train_reranker.py's recipes
    if types is None:
        pytest.fail(f"no parser registered for recipes/{recipe.parent.name}/")
    return TrlParser(types)


@pytest.mark.parametrize("recipe", [r for r in TRAINING_RECIPES if r.parent.name in PARSERS], ids=lambda p: p.name)
def test_recipe_parses(recipe):
    script_args, training_args, model_args = parse_recipe_args(parser_for(recipe), ["--config", str(recipe)])
    # given first, as people type it, the recipe parses the same (a misleading "dataset_name is required" before)
    assert parse_recipe_args(parser_for(recipe), [str(recipe)]) == (script_args, training_args, model_args)
    assert script_args.dataset_name and training_args.output_dir.startswith("data/")
    assert training_args.seed == 42 and training_args.run_name and training_args.hub_model_id
    assert model_args.model_name_or_path
    first_line = recipe.read_text().splitlines()[0]
    assert first_line.startswith("# Config for"), "first line states the hardware and global batch size"


def test_qwen_recipe_matches_the_map_reference():
    recipe = REPO / "recipes" / "map" / "qwen2.5-math-1.5b-qlora.yaml"
    _, t, m = parser_for(recipe).parse_args_and_config(["--config", str(recipe)])
    assert m.model_name_or_path == "Qwen/Qwen2.5-Math-1.5B" and m.load_in_4bit and m.bnb_4bit_quant_type == "nf4"
    assert m.dtype == "float16" and m.use_peft and (m.lora_r, m.lora_alpha) == (16, 32)
    assert m.lora_target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"] and m.lora_task_type == "SEQ_CLS"
    assert t.class_weighting == "balanced" and t.label_target == "label" and t.text_template is None
    assert (t.num_train_epochs, t.per_device_train_batch_size, t.gradient_accumulation_steps) == (3, 2, 4)
    assert t.optim == "paged_adamw_8bit" and t.learning_rate == 2e-4 and t.lr_scheduler_type == "cosine"
    assert (t.eval_strategy, t.eval_steps, t.save_steps) == ("steps", 100, 100)
    assert t.metric_for_best_model == "map@3" and t.load_best_model_at_end


def test_misspelled_key_fails_naming_it(tmp_path):
    recipe = tmp_path / "bad.yaml"
    good = (REPO / "recipes" / "map" / "minilm-cpu.yaml").read_text()
    recipe.write_text(good.replace("learning_rate:", "lerning_rate:"))
    proc = run_script("scripts/train_classifier.py", "--config", str(recipe), check=False)
    assert proc.returncode == 2 and "lerning_rate" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_value_and_missing_recipe_fail_clearly(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("dataset_name: x\noutput_dir: out\nlabel_target: everything\n")
    proc = run_script("scripts/train_classifier.py", "--config", str(recipe), check=False)
    assert proc.returncode == 2 and "label_target must be one of" in proc.stderr
    proc = run_script("scripts/train_classifier.py", "--config", str(tmp_path / "missing.yaml"), check=False)
    assert proc.returncode == 2 and "missing.yaml" in proc.stderr


def test_shared_fields_live_in_the_mixins():
    for config, mixins in (
        (ClassifierConfig, (HubOptions, OutputOptions)),
        (RetrieverConfig, (HubOptions, OutputOptions, FoldOptions)),
        (RerankerConfig, (HubOptions, OutputOptions, FoldOptions)),
    ):
        assert all(issubclass(config, m) for m in mixins)
        assert not {"hub_private_repo", "overwrite_output_dir", "fold"} & set(config.__annotations__)
        fields = {f.name: f for f in dataclasses.fields(config)}
        assert fields["hub_private_repo"].default is True and fields["overwrite_output_dir"].default is False
    for types, recipe in ((PARSERS["eedi"], "minilm-cpu.yaml"), (RERANKER_PARSER, "reranker-minilm-cpu.yaml")):
        argv = ["--config", str(REPO / "recipes" / "eedi" / recipe), "--eval_strategy", "steps", "--fold"]
        _, t, _ = TrlParser(types).parse_args_and_config([*argv, "-1"])
        assert t.fold == -1 and t.eval_strategy == "no" and not t.load_best_model_at_end
        with pytest.raises(ValueError, match=re.escape("fold must be -1 (train on every fold) or a fold id >= 0")):
            TrlParser(types).parse_args_and_config([*argv, "-2"])


def test_extra_data_mixtures_parse_from_yaml_json_and_paths(tmp_path):
    assert parse_mixture(None, "k") == []
    assert parse_mixture([{"path": "a", "weight": 2}, "b"], "k") == [
        {"path": "a", "weight": 2.0},
        {"path": "b", "weight": 1.0},
    ]
    assert parse_mixture(['[{"path": "a", "weight": 0.5}]', '{"path": "b"}', "c"], "k") == [
        {"path": "a", "weight": 0.5},
        {"path": "b", "weight": 1.0},
        {"path": "c", "weight": 1.0},
    ]
    for bad, needle in (
        ([{"weight": 2}], "k[0]: 'path' is required"),
        ([{"path": "a", "weight": 0}], "k[0] (a): 'weight' must be a number > 0, got 0"),
        (["b", {"path": "a", "weight": "x"}], "k[1] (a): 'weight' must be a number > 0, got 'x'"),
        ([{"path": "a", "wieght": 2}], "k[0]: unknown keys ['wieght']"),
        ([3], "k[0]: expected a {path, weight} mapping or a path, got 3"),
        (['[{"path": "a"'], 'k: \'[{"path": "a"\' is not valid JSON'),
    ):
        with pytest.raises(ValueError, match=re.escape(needle)):
            parse_mixture(bad, "k")
    recipe = tmp_path / "mix.yaml"
    text = (REPO / "recipes" / "eedi" / "minilm-cpu.yaml").read_text()
    recipe.write_text(text + "extra_datasets:\n  - {path: data/eedi-synthetic, weight: 0.5}\n  - path: data/more\n")
    _, t, _ = TrlParser(PARSERS["eedi"]).parse_args_and_config(["--config", str(recipe)])
    assert t.extra_datasets == [{"path": "data/eedi-synthetic", "weight": 0.5}, {"path": "data/more", "weight": 1.0}]
    override = ["--config", str(recipe), "--extra_datasets", json.dumps([{"path": "data/x", "weight": 2}])]
    _, t, _ = TrlParser(PARSERS["eedi"]).parse_args_and_config(override)
    assert t.extra_datasets == [{"path": "data/x", "weight": 2.0}]
    proc = run_script(
        "scripts/train_reranker.py",
        "--config",
        str(REPO / "recipes" / "eedi" / "reranker-minilm-cpu.yaml"),
        "--extra_candidates",
        '[{"path": "data/c", "weight": -1}]',
        check=False,
    )
    assert proc.returncode == 2 and "error: extra_candidates[0] (data/c): 'weight' must be a number > 0" in proc.stderr


@pytest.mark.parametrize("recipe", SYNTHETIC_RECIPES, ids=lambda p: p.name)
def test_synthetic_recipe_parses(recipe):
    from misconceptions.generation import parse_settings

    (settings,) = parse_settings(["--config", str(recipe)])
    assert settings.dataset_name and settings.output_dir.startswith("data/") and settings.model_name_or_path
    assert recipe.read_text().splitlines()[0].startswith("# Config for")


def test_synthetic_72b_recipe_matches_the_eedi_reference():
    from misconceptions.generation import parse_settings

    (s,) = parse_settings(["--config", str(REPO / "recipes" / "eedi" / "synthetic-qwen72b-awq.yaml")])
    assert (s.backend, s.model_name_or_path, s.quantization) == ("vllm", "Qwen/Qwen2.5-72B-Instruct-AWQ", None)
    assert (s.n_per_misconception, s.min_examples, s.fold, s.seed) == (100, 1, -1, 777)
    assert s.tensor_parallel_size > 1


def test_multinode_fsdp_config_launches_8_processes_on_each_of_2_nodes():
    """accelerate's own launch preparation on accelerate_configs/fsdp_multinode.yaml, as node 1 of 2 would run it."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    argv = ["--config_file", str(REPO / "accelerate_configs" / "fsdp_multinode.yaml"), "--machine_rank", "1"]
    argv += ["--main_process_ip", "10.0.0.1", "scripts/train_retriever.py", "--config", "recipes/eedi/exp010.yaml"]
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    assert (args.num_machines, args.num_processes, args.machine_rank, args.main_process_ip) == (2, 16, 1, "10.0.0.1")
    env = prepare_multi_gpu_env(args)
    assert (int(args.nnodes), int(args.nproc_per_node), int(args.node_rank)) == (2, 8, 1)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    assert env["ACCELERATE_MIXED_PRECISION"] == "no"  # the recipe's fp16/bf16 keys decide


def test_the_generator_recipe_takes_tensor_parallelism_across_gpus():
    from misconceptions.generation import parse_settings

    recipe = str(REPO / "recipes" / "eedi" / "synthetic-qwen72b-awq.yaml")
    (settings,) = parse_settings(["--config", recipe, "--tensor_parallel_size", "8"])
    assert settings.tensor_parallel_size == 8 and settings.backend == "vllm"


@pytest.mark.parametrize("recipe", PIPELINE_RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_pipeline_recipes_parse_and_name_existing_recipes(recipe):
    from misconceptions.pipeline import PipelineConfig, plan

    config = PipelineConfig.load(recipe)
    assert config.task == recipe.parent.name
    for key in ("retriever", "retriever_round2", "reranker", "classifier", "synthetic"):
        if getattr(config, key):
            assert (REPO / getattr(config, key)).is_file(), key
    assert (REPO / config.accelerate_config).is_file() and plan(config)


def test_an_unknown_rerank_scope_fails_naming_the_choices():
    from misconceptions.configs import RerankerConfig

    with pytest.raises(ValueError, match=r"rerank_scope must be one of \('all', 'seen'\), got 'unseen'"):
        RerankerConfig(output_dir="out", use_cpu=True, rerank_scope="unseen")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("distill_weight", 1.5, r"need distill_weight in \[0, 1\], distill_temperature > 0: 1.5, 2.0"),
        ("distill_temperature", 0.0, r"need distill_weight in \[0, 1\], distill_temperature > 0: 0.5, 0.0"),
    ],
)
def test_bad_distillation_settings_fail_naming_the_key(key, value, message):
    from misconceptions.configs import ClassifierConfig

    with pytest.raises(ValueError, match=message):
        ClassifierConfig(output_dir="out", use_cpu=True, **{key: value})
