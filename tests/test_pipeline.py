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
"""scripts/run_pipeline.py and the fold models' combination: the plans, bad recipes, `--dry_run` and `--steps`, the
MAP pipeline in miniature (tiny nf4 Qwen2), and the Eedi one on tiny GPTQ models with a kill in the middle
(`make test-recipes`, in .venv-gptq)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from misconceptions import InputError
from misconceptions.pipeline import PipelineConfig, plan, select_steps
from misconceptions.rerank import combine_rankings

from .conftest import DATA, REPO, SCRIPT_ENV, run_script
from .test_recipes import MINIATURES, tiny


EEDI_PIPELINE = REPO / "recipes" / "eedi" / "pipeline.yaml"
MAP_PIPELINE = REPO / "recipes" / "map" / "pipeline.yaml"


def test_the_eedi_plan_follows_the_reference_order():
    steps = plan(PipelineConfig.load(EEDI_PIPELINE))
    names = [s.name for s in steps]
    assert names == [
        "build",
        *[f"{kind}1-fold{k}" for k in (0, 1) for kind in ("retriever", "candidates")],
        *[f"{kind}2-fold{k}" for k in (0, 1) for kind in ("retriever", "candidates")],
        "reranker-fold0",
        "reranker-fold1",
        "submission",
    ]
    by_name = {s.name: s.command for s in steps}
    round2 = by_name["retriever2-fold1"]
    assert round2[1:4] == ["launch", "--config_file", "accelerate_configs/ddp.yaml"]
    assert "recipes/eedi/exp012.yaml" in round2 and round2[round2.index("--fold") + 1] == "1"
    assert round2[round2.index("--hard_negatives_dataset") + 1].endswith("candidates1-fold1")
    submission = by_name["submission"]
    retrievers = submission[submission.index("--retriever") + 1 : submission.index("--reranker")]
    assert [Path(r).name for r in retrievers] == ["retriever2-fold0", "retriever2-fold1"]


def test_the_map_plan_and_step_selection():
    steps = plan(PipelineConfig.load(MAP_PIPELINE))
    assert [s.name for s in steps] == ["build", "classifier", "predict-validation", "submission"]
    assert [s.name for s in select_steps(steps, "submission,classifier")] == ["classifier", "submission"]
    with pytest.raises(InputError, match="unknown step.*'train'.*the steps are: build, classifier"):
        select_steps(steps, "train")


def test_bad_pipeline_recipes_fail_naming_the_key(tmp_path):
    recipe = tmp_path / "p.yaml"
    recipe.write_text(yaml.safe_dump({"task": "eedi", "output_dir": "o", "dataset_name": "d", "retrievr": "x"}))
    with pytest.raises(InputError, match=r"p\.yaml: unknown key\(s\) \['retrievr'\]"):
        PipelineConfig.load(recipe)
    recipe.write_text(yaml.safe_dump({"task": "eedi", "output_dir": "o", "dataset_name": "d"}))
    with pytest.raises(InputError, match=r"needs the recipe key\(s\) \['retriever', 'retriever_round2', 'reranker'\]"):
        PipelineConfig.load(recipe)
    with pytest.raises(InputError, match="folds must be"):
        PipelineConfig.load(EEDI_PIPELINE, {"folds": [0, 2]})
    with pytest.raises(InputError, match="not found"):
        PipelineConfig.load(tmp_path / "missing.yaml")
    proc = run_script("scripts/run_pipeline.py", str(EEDI_PIPELINE), "--override", "nonsense", check=False)
    assert proc.returncode != 0 and "expected KEY=VALUE" in proc.stderr


def test_dry_run_prints_every_command_and_runs_none(tmp_path):
    out = tmp_path / "run"
    proc = run_script(
        "scripts/run_pipeline.py", "--config", str(EEDI_PIPELINE), "--dry_run", "--override", f"output_dir={out}"
    )
    assert proc.stdout.count("accelerate_configs/ddp.yaml") == 6 and "scripts/predict_eedi.py" in proc.stdout
    assert "| submission | dry run |" in proc.stdout and not out.exists()


def test_combined_rankings_order_by_mean_position():
    a = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    b = np.array([[2, 1, 3, 4], [8, 7, 6, 5]])
    assert (combine_rankings([a]) == a).all()
    combined = combine_rankings([a, b])
    assert combined[0].tolist() == [1, 2, 3, 4]  # 1 and 2 tie at 0.5: the first list's order
    assert combined[1].tolist() == [5, 6, 7, 8]  # all tie at 1.5: the first list's order
    c = np.array([[3, 1, 2, 4], [7, 5, 6, 8]])
    assert combine_rankings([a, b, c])[0].tolist() == [1, 2, 3, 4]
    assert combine_rankings([b, c, c])[0].tolist() == [3, 1, 2, 4]


def test_two_copies_of_a_retriever_rank_as_one(eedi_minilm_run, eedi_data):
    """Fold models combine by mean cosine: two copies of one model must give its own scores and order."""
    from misconceptions.retrieval import retrieve_candidates

    model = str(eedi_minilm_run[0])
    one, _, _ = retrieve_candidates(model, eedi_data["train_csv"], eedi_data["mapping_csv"], 25)
    two, _, info = retrieve_candidates([model, model], eedi_data["train_csv"], eedi_data["mapping_csv"], 25)
    assert info["models"] == 2
    assert one["candidate_ids"].tolist() == two["candidate_ids"].tolist()
    np.testing.assert_allclose(np.stack(one["candidate_scores"]), np.stack(two["candidate_scores"]), atol=1e-5)


@pytest.mark.recipes
@pytest.mark.parametrize("recipe", ["recipes/map/pipeline.yaml"], ids=str)
def test_map_pipeline_in_miniature(recipe, small_map_dataset, tmp_path):
    """Train (the QLoRA recipe on a tiny nf4 Qwen2, 2 steps) and predict; a second run skips every step."""
    out = tmp_path / "map-pipeline"
    size = [*MINIATURES["recipes/map/qwen2.5-math-1.5b-qlora.yaml"].overrides]
    step_args = {"train_classifier": ["--model_name_or_path", str(tiny("qwen2")), *size]}
    args = ["scripts/run_pipeline.py", recipe, "--override", f"output_dir={out}", "--override", "train_csv=null"]
    args += ["--override", f"dataset_name={small_map_dataset}", "--override", f"step_args={json.dumps(step_args)}"]
    first = run_script(*args, subprocess_=True, timeout=900)
    assert "| classifier | ran |" in first.stdout and "eval_map@3" in first.stdout
    assert (out / "submission.csv").is_file() and (out / "pipeline_summary.md").is_file()
    second = run_script(*args, subprocess_=True, timeout=300)
    assert second.stdout.count("| skipped |") == 3 and "| ran |" not in second.stdout


@pytest.mark.recipes
@pytest.mark.parametrize("recipe", ["recipes/eedi/pipeline.yaml"], ids=str)
def test_eedi_pipeline_in_miniature_finishes_after_a_kill(recipe, eedi_data, tmp_path):
    """Both folds, every step, on tiny GPTQ-Int4 Qwen2 models: killed in the middle of round 2, the same command
    finishes the run without redoing a finished step, and writes the combined submission."""
    model = str(tiny("qwen2-gptq-int4"))
    retriever = ["--model_name_or_path", model, *MINIATURES["recipes/eedi/exp010.yaml"].overrides]
    reranker = ["--model_name_or_path", model, *MINIATURES["recipes/eedi/exp015.yaml"].overrides]
    step_args = {"train_retriever": retriever, "train_retriever2": retriever, "train_reranker": reranker}
    out = tmp_path / "eedi-pipeline"
    command = [sys.executable, "scripts/run_pipeline.py", recipe, "--override", f"output_dir={out}"]
    command += ["--override", "train_csv=null", "--override", f"dataset_name={eedi_data['dataset']}"]
    command += ["--override", f"test_csv={DATA / 'eedi' / 'test.csv'}", "--override", "candidates_k=25"]
    command += ["--override", f"step_args={json.dumps(step_args)}"]
    env = {**os.environ, **SCRIPT_ENV}
    log = tmp_path / "first.log"
    with open(log, "w") as handle:
        first = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        # killed 5 s after the pipeline announces round 2's first training (its launch alone takes longer)
        deadline = time.monotonic() + 1200
        while "retriever2-fold0: " not in log.read_text() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(5)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert (out / "candidates1-fold1" / "dataset_info.json").is_file(), log.read_text()[-3000:]
    assert not (out / "submission.csv").exists()
    finished = {p: p.stat().st_mtime for p in out.glob("*/train_results.json")}
    assert len(finished) == 2  # round 1, both folds
    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800, check=False)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-5000:]
    for name in ("retriever1-fold0", "candidates1-fold0", "retriever1-fold1", "candidates1-fold1"):
        assert f"| {name} | skipped |" in second.stdout
    assert all(p.stat().st_mtime == mtime for p, mtime in finished.items())  # not trained again
    assert "| retriever2-fold0 | ran |" in second.stdout and "| submission | ran |" in second.stdout
    assert "eval_reranked_map@25" in second.stdout
    submission = pd.read_csv(out / "submission.csv")
    assert len(submission) > 0 and submission["MisconceptionId"].str.split().map(len).eq(25).all()
