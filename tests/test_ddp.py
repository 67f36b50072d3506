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
"""Two CPU processes through `accelerate launch --config_file accelerate_configs/cpu_ddp.yaml` train as ONE job.

tests/ddp_probe.py records each process's view (world size, rank, the examples it stepped on, its final weights).
`job_problems` lists what contradicts one data-parallel job; a control run of two independent processes (the silent
"two rank-0 trainings" trap) must be caught by it, so the check cannot pass vacuously.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from .conftest import EEDI_MINILM as RETRIEVER_RECIPE
from .conftest import MAP_MINILM as CLASSIFIER_RECIPE
from .conftest import REPO, run_script


pytestmark = pytest.mark.slow  # two processes each: the process boundary is the point


CPU_DDP = REPO / "accelerate_configs" / "cpu_ddp.yaml"
ACCELERATE = Path(sys.executable).with_name("accelerate")
STEPS, BATCH = 3, 8


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def _launch(probe: Path, *script_args: str) -> subprocess.CompletedProcess:
    cmd = [str(ACCELERATE), "launch", "--config_file", str(CPU_DDP), "-m", "tests.ddp_probe", str(probe)]
    proc = subprocess.run(
        cmd + list(script_args), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def job_problems(probe: Path, output_dir: Path, steps: int, batch: int) -> list[str]:
    """Everything in the per-process reports and the output folder that contradicts one 2-process job."""
    reports = [json.loads(p.read_text()) for p in sorted(probe.glob("*.json"))]
    problems = []
    if len(reports) != 2:
        return [f"{len(reports)} process reports, expected 2"]
    if any(r["dist_world_size"] != 2 or r["trainer_world_size"] != 2 for r in reports):
        problems.append(f"world sizes {[(r['dist_world_size'], r['trainer_world_size']) for r in reports]}, not 2")
    if sorted(r["dist_rank"] for r in reports) != [0, 1]:
        problems.append(f"ranks {[r['dist_rank'] for r in reports]}, not 0 and 1")
    if sum(r["is_world_process_zero"] for r in reports) != 1:
        problems.append("not exactly one main process")
    first, second = (r["examples"] for r in reports)
    if len(first) != steps * batch or len(second) != steps * batch:
        problems.append(f"examples per rank {len(first)}, {len(second)}; expected {steps * batch} each")
    if set(first) & set(second):
        problems.append(f"{len(set(first) & set(second))} examples were seen by both ranks (no data sharding)")
    if reports[0]["weights"] != reports[1]["weights"]:
        problems.append("the ranks ended with different weights (no gradient all-reduce)")
    if any(r["global_step"] != steps for r in reports):
        problems.append(f"global steps {[r['global_step'] for r in reports]}, expected {steps}")
    checkpoints = sorted(p.name for p in output_dir.glob("checkpoint-*"))
    if checkpoints != [f"checkpoint-{steps}"]:
        problems.append(f"checkpoints {checkpoints}, expected one: checkpoint-{steps}")
    return problems


@pytest.fixture(scope="module")
def distinct_map_dataset(small_map_csv, tmp_path_factory) -> Path:
    """The small MAP rows without repeated model inputs, so that an example's hash identifies its row."""
    df = pd.read_csv(small_map_csv, dtype=str, keep_default_na=False)
    df = df.drop_duplicates(["MC_Answer", "StudentExplanation"])
    folder = tmp_path_factory.mktemp("ddp_map")
    df.to_csv(folder / "train.csv", index=False)
    run_script(
        "data_builders/build_map.py", "--train_csv", str(folder / "train.csv"), "--output_dir", str(folder / "map")
    )
    return folder / "map"


def _classifier_args(dataset: Path, output_dir: Path, steps: int = STEPS) -> list[str]:
    return [
        "scripts/train_classifier.py",
        "--config",
        str(CLASSIFIER_RECIPE),
        "--dataset_name",
        str(dataset),
        "--output_dir",
        str(output_dir),
        "--max_steps",
        str(steps),
        "--per_device_train_batch_size",
        str(BATCH),
        "--eval_strategy",
        "no",
        "--save_strategy",
        "steps",
        "--save_steps",
        str(steps),
        "--load_best_model_at_end",
        "false",
        "--max_length",
        "48",
        "--tfidf_weight",
        "0",
    ]


def test_classifier_trains_as_one_job_on_two_cpu_processes(distinct_map_dataset, tmp_path):
    probe, out = tmp_path / "probe", tmp_path / "out"
    proc = _launch(probe, *_classifier_args(distinct_map_dataset, out))
    assert job_problems(probe, out, STEPS, BATCH) == []
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS and (out / "model.safetensors").is_file()
    assert (proc.stdout + proc.stderr).count("***** train metrics *****") == 1  # only the main process reports


def test_retriever_trains_as_one_job_on_two_cpu_processes(eedi_data, tmp_path):
    dataset = eedi_data["dataset"]
    probe, out = tmp_path / "probe", tmp_path / "out"
    _launch(
        probe,
        "scripts/train_retriever.py",
        "--config",
        str(RETRIEVER_RECIPE),
        "--dataset_name",
        str(dataset),
        "--output_dir",
        str(out),
        "--max_steps",
        "1",  # 2 x 8 of the training fold's 24 rows: within one epoch, so no row may come twice
        "--per_device_train_batch_size",
        str(BATCH),
        "--eval_strategy",
        "no",
        "--save_strategy",
        "steps",
        "--save_steps",
        "1",
        "--load_best_model_at_end",
        "false",
        "--query_max_length",
        "64",
        "--document_max_length",
        "32",
        "--num_negatives",
        "1",
    )
    assert job_problems(probe, out, 1, BATCH) == []
    assert json.loads((out / "eval_results.json").read_text())["eval_map@25"] > 0


def test_two_independent_processes_are_caught(distinct_map_dataset, tmp_path):
    """The trap: two processes that each train alone as rank 0 (here: started side by side without a launcher)."""
    probe = tmp_path / "probe"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.ddp_probe", str(probe)]
            + _classifier_args(distinct_map_dataset, tmp_path / f"out{i}", steps=1),
            cwd=REPO,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]
    problems = " | ".join(job_problems(probe, tmp_path / "out0", 1, BATCH))
    assert "world sizes" in problems and "ranks [0, 0]" in problems
    assert "seen by both ranks" in problems  # each process trained on the same data alone
