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
"""Synthetic questions and explanations: validation of model output (scripted outputs), the resumable store (an
interrupted run and a killed process), few-shot choice, the synthetic dataset and its use in training, explanations
in the queries, and generation through the transformers backend (vLLM: tests/test_vllm.py)."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from datasets import load_from_disk

from misconceptions import (
    RETRIEVER_META,
    build_eedi_dataset,
    load_eedi_dataset,
    read_questions_csv,
    resolve_model_path,
)
from misconceptions.eedi import extra_training_rows, query_texts, sample_by_weight
from misconceptions.explanations import attach_explanations, explain_rows, explanation_key
from misconceptions.generation import GenerationSettings
from misconceptions.io_utils import read_jsonl
from misconceptions.question_format import INVALID_REASONS, QUESTION_PREFILL, parse_question
from misconceptions.synthetic import (
    GENERATIONS_FILE,
    FewShotPicker,
    GenerationStore,
    few_shot_pool,
    generate_questions,
    question_conversation,
    summarize,
    synthetic_questions,
    target_misconceptions,
)

from .conftest import REPO, run_script


CPU_RECIPE = REPO / "recipes" / "eedi" / "synthetic-smollm2-cpu.yaml"


def question_json(tag: str, correct: str = "A", wrong: str = "C", **changes) -> str:
    question = {
        "ConstructName": f"Construct {tag}",
        "SubjectName": "Fractions",
        "QuestionText": f"What is \\( \\frac{{1}}{{2}} \\) of {tag}?",
        "AnswerAText": f"{tag}1",
        "AnswerBText": f"{tag}2",
        "AnswerCText": f"{tag}3",
        "AnswerDText": f"{tag}4",
        "CorrectAnswer": correct,
        "MisconceptionAnswer": wrong,
    } | changes
    return json.dumps(question)


class ScriptedBackend:
    """Replies from a function of (misconception name, sample index); records every call; can fail on call k."""

    def __init__(self, reply, fail_on_call: int | None = None):
        self.reply, self.fail_on_call, self.calls = reply, fail_on_call, []

    def generate(self, conversations, n):
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt("killed")
        names = [conv[-2 if conv[-1]["role"] == "assistant" else -1]["content"] for conv in conversations]
        self.calls.append(names)
        return [[self.reply(name, j) for j in range(n)] for name in names]


@pytest.fixture(scope="module")
def eedi_dataset(eedi_data):
    """The session's small Eedi dataset (conftest's `eedi_data`: built once for every test module)."""
    return eedi_data


def _settings(tmp_path, **changes) -> GenerationSettings:
    defaults = {
        "dataset_name": "unused",
        "output_dir": str(tmp_path / "gen"),
        "n_per_misconception": 3,
        "batch_size": 3,
    }
    return GenerationSettings(**(defaults | changes))


def _targets(n: int = 5) -> pd.DataFrame:
    return pd.DataFrame({"MisconceptionId": range(10, 10 + n), "MisconceptionName": [f"Misc {i}" for i in range(n)]})


class _NoFewShot:
    def pick(self, name, k):
        return []


# ------------------------------------------------------------------------------------------------------------------
# Validation of model output
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Sure! Here is a question about fractions.", "not_json"),
        ('{"ConstructName": "x", "SubjectName": "y"', "not_json"),
        ("[1, 2, 3]", "not_json"),
        ('{"QuestionText": [1, 2, 3]}', "missing_fields"),
        (question_json("q")[:-1] + ', "extra": 1}', "valid"),
        (
            json.dumps({k: v for k, v in json.loads(question_json("q")).items() if k != "AnswerDText"}),
            "missing_fields",
        ),
        (question_json("q", QuestionText="   "), "empty_field"),
        (question_json("q", AnswerBText=None), "empty_field"),
        (question_json("q", AnswerCText="Q1 "), "duplicate_options"),  # same as A after case and spaces
        (question_json("q", correct="B", wrong="B"), "correct_is_wrong"),
        (question_json("q", correct="E"), "bad_letter"),
        ("Here it is: " + question_json("q") + "\nHope this helps! {not json}", "valid"),
        # Left open after the last field, repeating it: closed there. Cut before it: still not JSON.
        (question_json("q")[:-1] + ', "MisconceptionAnswer": "C", "MisconceptionAnswer": "C", "Misc', "valid"),
        (question_json("q").split(', "CorrectAnswer"')[0] + ', "CorrectAnswer": "A", "Cor', "not_json"),
    ],
)
def test_parse_question_drops_invalid_output_with_its_reason(text, reason):
    question, got = parse_question(text)
    assert got == reason and (question is not None) == (reason == "valid")
    assert got in (*INVALID_REASONS, "valid")


def test_parse_question_keeps_latex_that_the_model_did_not_escape():
    raw = QUESTION_PREFILL + 'Angles", "SubjectName": "Shapes", "QuestionText": "Is \\( 90^{\\circ} \\neq x \\)?\nYes"'
    raw += ', "AnswerAText": "\\frac{1}{2}", "AnswerBText": "b", "AnswerCText": "c", "AnswerDText": "\\times 2"'
    raw += ', "CorrectAnswer": "a", "MisconceptionAnswer": "d"}'
    question, reason = parse_question(raw)
    assert reason == "valid"
    assert question["QuestionText"] == "Is \\( 90^{\\circ} \\neq x \\)?\nYes"
    assert question["AnswerAText"] == "\\frac{1}{2}" and question["AnswerDText"] == "\\times 2"
    assert (question["CorrectAnswer"], question["MisconceptionAnswer"]) == ("A", "D")


def test_invalid_and_duplicate_outputs_are_counted_never_written_as_rows(tmp_path):
    outputs = ["not json", question_json("x", correct="C", wrong="C"), question_json("good"), question_json("good")]
    backend = ScriptedBackend(lambda name, j: outputs[j] if name.endswith("0") else question_json(f"{name}-{j}"))
    settings = _settings(tmp_path, n_per_misconception=4, batch_size=4)
    store = GenerationStore(settings.output_dir, settings.identity())
    counts = generate_questions(backend, _targets(2), _NoFewShot(), store, settings, progress=_quiet)
    assert counts == {"valid": 5, "not_json": 1, "correct_is_wrong": 1, "duplicate": 1}
    first = store.records[0]
    assert [q["QuestionText"] for q in first["questions"]] == [json.loads(question_json("good"))["QuestionText"]]
    assert [r["reason"] for r in first["rejected"]] == ["not_json", "correct_is_wrong"]
    rows = synthetic_questions(store.records)
    assert len(rows) == 5 and rows["QuestionId"].is_unique
    summary = summarize(store)
    assert summary["generations"] == 8 and summary["valid"] == 5 and summary["valid_share"] == 5 / 8


def _quiet(**kwargs):
    from tqdm.auto import tqdm

    return tqdm(disable=True, **kwargs)


# ------------------------------------------------------------------------------------------------------------------
# Resuming
# ------------------------------------------------------------------------------------------------------------------
def test_interrupted_run_resumes_without_losing_or_repeating(tmp_path):
    settings = _settings(tmp_path, n_per_misconception=2, batch_size=2)  # one misconception per call
    reply = lambda name, j: question_json(f"{name}-{j}")  # noqa: E731
    store = GenerationStore(settings.output_dir, settings.identity())
    with pytest.raises(KeyboardInterrupt):
        generate_questions(ScriptedBackend(reply, fail_on_call=3), _targets(5), _NoFewShot(), store, settings, _quiet)
    path = tmp_path / "gen" / GENERATIONS_FILE
    before = path.read_bytes()
    assert len(read_jsonl(path)) == 3
    # A kill in the middle of a write leaves a partial line: it is cut off and that misconception done again.
    with path.open("ab") as handle:
        handle.write(b'{"MisconceptionId": 13, "questions": [')
    again = GenerationStore(settings.output_dir, settings.identity())
    assert path.read_bytes() == before and again.done == {10, 11, 12}
    backend = ScriptedBackend(reply)
    generate_questions(backend, _targets(5), _NoFewShot(), again, settings, _quiet)
    assert backend.calls == [["Misconception: Misc 3"], ["Misconception: Misc 4"]]
    records = read_jsonl(path)
    assert [r["MisconceptionId"] for r in records] == [10, 11, 12, 13, 14]
    assert path.read_bytes().startswith(before)
    # A finished store asks for nothing more.
    done = ScriptedBackend(reply)
    generate_questions(
        done, _targets(5), _NoFewShot(), GenerationStore(settings.output_dir, settings.identity()), settings, _quiet
    )
    assert done.calls == []


def test_store_refuses_to_resume_with_other_settings(tmp_path):
    settings = _settings(tmp_path)
    GenerationStore(settings.output_dir, settings.identity())
    other = _settings(tmp_path, model_name_or_path="Qwen/Qwen2.5-72B-Instruct-AWQ")
    with pytest.raises(ValueError, match="other settings.*model_name_or_path"):
        GenerationStore(other.output_dir, other.identity())


@pytest.mark.slow
def test_killed_process_resumes_without_losing_or_repeating(eedi_dataset, tmp_path):
    """The real script on SmolLM2, killed with SIGKILL after two misconceptions are written, then run again."""
    out = tmp_path / "killed"
    args = [
        sys.executable,
        "scripts/generate_synthetic.py",
        "--config",
        str(CPU_RECIPE),
        "--dataset_name",
        str(eedi_dataset["dataset"]),
        "--output_dir",
        str(out),
        "--max_misconceptions",
        "5",
        "--n_per_misconception",
        "1",
        "--batch_size",
        "1",
        "--num_few_shot",
        "1",
        "--max_new_tokens",
        "12",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = out / GENERATIONS_FILE
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if path.is_file() and len(read_jsonl(path)) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = read_jsonl(path)
    assert 2 <= len(written) < 5
    done = run_script(*args[1:])
    final = read_jsonl(path)
    ids = [r["MisconceptionId"] for r in final]
    assert final[: len(written)] == written and len(ids) == 5 and len(set(ids)) == 5
    assert f"5 target misconceptions, {5 - len(written)} to do" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["generations"] == 5 and summary["this_run"]["generations"] == 5 - len(written)
    assert 0.0 <= summary["valid_share"] <= 1.0 and "valid share" in done.stdout


# ------------------------------------------------------------------------------------------------------------------
# Targets and few-shot examples
# ------------------------------------------------------------------------------------------------------------------
def test_targets_are_the_misconceptions_without_real_rows_outside_the_fold(eedi_dataset, tmp_path):
    pairs, misconceptions = load_eedi_dataset(str(eedi_dataset["dataset"]))
    real = pairs["train"].to_pandas()
    unseen = target_misconceptions(real, misconceptions, _settings(tmp_path, min_examples=1))
    assert set(unseen["MisconceptionId"]).isdisjoint(real["MisconceptionId"]) and len(unseen) == 80
    outside_fold0 = set(real.loc[real["fold"] != 0, "MisconceptionId"])
    fold0 = target_misconceptions(real, misconceptions, _settings(tmp_path, fold=0, max_misconceptions=500))
    assert set(fold0["MisconceptionId"]) == set(misconceptions["MisconceptionId"]) - outside_fold0
    some = target_misconceptions(
        real, misconceptions, _settings(tmp_path, misconception_ids=[int(real["MisconceptionId"].iloc[0])])
    )
    assert len(some) == 1
    with pytest.raises(ValueError, match="not in the misconception mapping"):
        target_misconceptions(real, misconceptions, _settings(tmp_path, misconception_ids=[999999]))


def test_few_shot_examples_are_real_questions_of_a_similar_construct(eedi_dataset):
    pairs, _ = load_eedi_dataset(str(eedi_dataset["dataset"]))
    real, unlabelled = pairs["train"].to_pandas(), pairs["unlabelled"].to_pandas()
    pool = few_shot_pool(real, unlabelled, fold=0)
    assert (pool["fold"] != 0).all() and len(pool) > 0
    wide = read_questions_csv(eedi_dataset["train_csv"]).set_index("QuestionId")
    row = pool.iloc[0]
    for letter in "ABCD":
        assert row[f"Answer{letter}Text"] == wide.loc[row["QuestionId"], f"Answer{letter}Text"]
    target = pool.iloc[3]
    picked = FewShotPicker(pool).pick(target["MisconceptionName"], 2)
    assert len(picked) == 2 and picked[-1]["MisconceptionName"] == target["MisconceptionName"]
    assert picked[0]["QuestionId"] != picked[1]["QuestionId"]
    conversation = question_conversation("Confuses area and perimeter", picked)
    assert [m["role"] for m in conversation] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    example, reason = parse_question(conversation[2]["content"])
    assert reason == "valid" and example["MisconceptionAnswer"] == picked[0]["Answer"]
    assert conversation[-1]["content"] == QUESTION_PREFILL


# ------------------------------------------------------------------------------------------------------------------
# The synthetic dataset, and training on a mix
# ------------------------------------------------------------------------------------------------------------------
def _scripted_generations(folder, misconceptions: pd.DataFrame, n: int = 3):
    settings = GenerationSettings(output_dir=str(folder), n_per_misconception=2, batch_size=2)
    store = GenerationStore(folder, settings.identity())
    targets = misconceptions.head(n)
    backend = ScriptedBackend(lambda name, j: question_json(f"{name[-12:]}-{j}", correct="B", wrong="ABCD"[j * 2]))
    generate_questions(backend, targets, _NoFewShot(), store, settings, _quiet)
    return targets


@pytest.fixture(scope="module")
def synthetic(eedi_dataset, tmp_path_factory):
    """Scripted generations (2 questions for each of 3 misconceptions without real rows), built into a dataset."""
    folder = tmp_path_factory.mktemp("synthetic")
    pairs, misconceptions = load_eedi_dataset(str(eedi_dataset["dataset"]))
    real = pairs["train"].to_pandas()
    targets = _scripted_generations(
        folder / "gen", misconceptions[~misconceptions["MisconceptionId"].isin(real["MisconceptionId"])]
    )
    args = ["data_builders/build_synthetic.py", "--generations", str(folder / "gen"), "--misconceptions_csv"]
    args += [str(eedi_dataset["mapping_csv"]), "--output_dir", str(folder / "dataset")]
    proc = run_script(*args)
    return {"dataset": folder / "dataset", "targets": targets, "real": real, "stdout": proc.stdout, "args": args}


def test_build_synthetic_writes_labelled_pairs_and_a_wide_csv(synthetic):
    out = synthetic["dataset"]
    assert "Saved 6 synthetic rows for 3 misconceptions" in synthetic["stdout"]
    train = load_from_disk(str(out))["train"].to_pandas()
    assert (train["source"] == "synthetic").all() and (train["fold"] == -1).all()
    assert sorted(set(train["MisconceptionId"])) == sorted(synthetic["targets"]["MisconceptionId"])
    assert "query" not in train and all(q.startswith("<Question> What is") for q in query_texts(train))
    # The wrong answer it was written for carries the label; the wide CSV reads back as a labelled train.csv.
    wide = read_questions_csv(out / "synthetic.csv", require_labels=True)
    assert len(wide) == 6 and wide["QuestionId"].min() >= 1_000_000
    assert wide["MisconceptionAId"].notna().sum() == 3 and wide["MisconceptionCId"].notna().sum() == 3
    again = run_script(*synthetic["args"], check=False)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_extra_datasets_are_sampled_by_weight_and_never_held_out(eedi_dataset, synthetic):
    frame = pd.DataFrame({"x": range(10)})
    assert len(sample_by_weight(frame, 1.0, 0)) == 10 and len(sample_by_weight(frame, 2.5, 0)) == 25
    assert len(sample_by_weight(frame, 0.3, 0)) == 3 and sample_by_weight(frame, 0.3, 0)["x"].is_unique
    _, misconceptions = load_eedi_dataset(str(eedi_dataset["dataset"]))
    ids = set(misconceptions["MisconceptionId"])
    rows = extra_training_rows([{"path": str(synthetic["dataset"]), "weight": 2.0}], ids)
    assert len(rows) == 12 and (rows["fold"] == -1).all() and (rows["source"] == "synthetic").all()
    with pytest.raises(ValueError, match="not in the training dataset's mapping"):
        mixture = [{"path": str(synthetic["dataset"]), "weight": 1.0}]
        extra_training_rows(mixture, ids - {int(rows["MisconceptionId"].iloc[0])})


def test_build_descriptions_writes_the_unseen_misconceptions_descriptions_as_queries(eedi_dataset, tmp_path):
    real = load_eedi_dataset(str(eedi_dataset["dataset"]))[0]["train"].to_pandas()
    _, misconceptions = load_eedi_dataset(str(eedi_dataset["dataset"]))
    out = tmp_path / "descriptions"
    args = ["data_builders/build_descriptions.py", "--dataset", str(eedi_dataset["dataset"]), "--fold", "0"]
    run_script(*args, "--output_dir", str(out))
    train = load_from_disk(str(out))["train"].to_pandas()
    # One row per misconception with no real row outside the held-out fold; fold 0's labels are not read.
    outside_fold0 = set(real.loc[real["fold"] != 0, "MisconceptionId"])
    assert set(train["MisconceptionId"]) == set(misconceptions["MisconceptionId"]) - outside_fold0
    assert len(train) == len(misconceptions) - len(outside_fold0) and train["QuestionId"].min() >= 2_000_000
    assert (train["source"] == "description").all() and (train["fold"] == -1).all()
    assert (train["QuestionText"] == train["MisconceptionName"]).all() and (train["AnswerText"] == "").all()
    queries = query_texts(train)
    assert all(q.startswith(f"<Question> {name}") for q, name in zip(queries, train["MisconceptionName"], strict=True))
    rows = extra_training_rows([{"path": str(out), "weight": 1.0}], set(misconceptions["MisconceptionId"]))
    assert len(rows) == len(train) and (rows["source"] == "description").all()
    every = run_script(*args, "--all_misconceptions", "--output_dir", str(tmp_path / "all"))
    assert f"Saved {len(misconceptions)} description rows" in every.stdout
    for extra, needle in (
        (["--output_dir", str(out)], "already exists"),
        (["--output_dir", str(tmp_path / "bad"), "--fold", "9"], "--fold 9 is not a fold of this dataset"),
        (["--output_dir", str(tmp_path / "bad"), "--split", "nope"], "no 'nope' split"),
    ):
        bad = run_script(*args, *extra, check=False)
        assert bad.returncode == 2 and needle in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_train_retriever_mixes_synthetic_rows_but_counts_only_real_ones_as_seen(eedi_dataset, synthetic, tmp_path):
    real = synthetic["real"]
    out = tmp_path / "retriever"
    common = ["--config", str(REPO / "recipes" / "eedi" / "minilm-cpu.yaml"), "--dataset_name"]
    common += [str(eedi_dataset["dataset"]), "--max_steps", "1", "--per_device_train_batch_size", "8"]
    proc = run_script(
        "scripts/train_retriever.py",
        *common,
        "--output_dir",
        str(out),
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--load_best_model_at_end",
        "false",
        "--num_negatives",
        "1",
        "--extra_datasets",
        json.dumps([{"path": str(synthetic["dataset"]), "weight": 0.5}]),
    )
    assert f"Extra training rows: 3 from {synthetic['dataset']} (weight 0.5)" in proc.stdout + proc.stderr
    n_real = int((real["fold"] != 0).sum())
    assert json.loads((out / "train_results.json").read_text())["train_samples"] == n_real + 3
    meta = json.loads((out / RETRIEVER_META).read_text())
    assert set(meta["seen_misconception_ids"]) == set(real.loc[real["fold"] != 0, "MisconceptionId"])
    assert set(meta["seen_misconception_ids"]).isdisjoint(synthetic["targets"]["MisconceptionId"])
    assert meta["extra_datasets"] == [{"path": str(synthetic["dataset"]), "weight": 0.5}]
    args = [*common, "--output_dir", str(tmp_path / "bad"), "--extra_datasets"]
    for mixture, needle in (
        ([{"path": str(synthetic["dataset"]), "weight": 0}], "'weight' must be a number > 0, got 0"),
        ([{"weight": 2}], "extra_datasets[0]: 'path' is required"),
    ):
        bad = run_script("scripts/train_retriever.py", *args, json.dumps(mixture), check=False)
        assert bad.returncode == 2 and needle in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_train_reranker_mixes_candidates_of_synthetic_questions(eedi_dataset, synthetic, tmp_path):
    minilm = resolve_model_path("builtin:all-MiniLM-L6-v2")
    for name, csv in (("real", eedi_dataset["train_csv"]), ("synthetic", synthetic["dataset"] / "synthetic.csv")):
        args = ["--model", minilm, "--input_csv", str(csv), "--misconceptions_csv", str(eedi_dataset["mapping_csv"])]
        args += ["--output_csv", str(tmp_path / f"{name}.csv"), "--candidates_out", str(tmp_path / f"cand-{name}")]
        run_script("scripts/retrieve.py", *args, "--candidates_k", "20")
    out = tmp_path / "reranker"
    proc = run_script(
        "scripts/train_reranker.py",
        "--config",
        str(REPO / "recipes" / "eedi" / "reranker-minilm-cpu.yaml"),
        "--dataset_name",
        str(eedi_dataset["dataset"]),
        "--candidates",
        str(tmp_path / "cand-real"),
        "--extra_candidates",
        json.dumps([{"path": str(tmp_path / "cand-synthetic"), "weight": 2}]),
        "--model_name_or_path",
        minilm,
        "--output_dir",
        str(out),
        "--max_steps",
        "1",
        "--per_device_train_batch_size",
        "8",
        "--final_eval",
        "false",
    )
    assert f"Extra training rows: 12 from {tmp_path / 'cand-synthetic'} (weight 2.0)" in proc.stdout + proc.stderr
    meta = json.loads((out / "misconceptions_reranker.json").read_text())
    real = synthetic["real"]
    assert meta["train_rows"] == int((real["fold"] != 0).sum()) + 12
    assert set(meta["seen_misconception_ids"]) == set(real.loc[real["fold"] != 0, "MisconceptionId"])
    assert meta["extra_candidates"] == [{"path": str(tmp_path / "cand-synthetic"), "weight": 2.0}]


# ------------------------------------------------------------------------------------------------------------------
# Explanations
# ------------------------------------------------------------------------------------------------------------------
def test_explanations_are_cached_and_fill_the_query(eedi_dataset, tmp_path):
    from misconceptions import pivot_wrong_answers

    pairs = pivot_wrong_answers(read_questions_csv(eedi_dataset["train_csv"]))
    backend = ScriptedBackend(lambda content, j: f"  The student  thinks {len(content)}.\n")
    counts = explain_rows(backend, pairs.head(10), tmp_path / "expl", batch_size=4)
    assert counts["written"] == counts["distinct"] == 10 and len(backend.calls) == 3
    counts = explain_rows(backend, pairs.head(14), tmp_path / "expl", batch_size=4)
    assert counts == {"rows": 14, "distinct": 14, "cached": 10, "written": 4}
    with pytest.raises(ValueError, match="no explanation for 34 of 48 rows"):
        attach_explanations(pairs, tmp_path / "expl")
    explain_rows(backend, pairs, tmp_path / "expl", batch_size=16)
    filled = attach_explanations(pairs, tmp_path / "expl")
    assert filled["LLMOutput"].str.match(r"^The student thinks \d+\.$").all()
    dataset, _, _ = build_eedi_dataset(
        eedi_dataset["train_csv"], eedi_dataset["mapping_csv"], explanations=tmp_path / "expl"
    )
    row = dataset["train"][0]
    key = explanation_key(row)
    assert query_texts(pd.DataFrame([row]))[0].endswith(
        "\n<LLMOutput> " + filled.set_index("QuestionId_Answer").loc[row["QuestionId_Answer"], "LLMOutput"]
    )
    assert key in {explanation_key(r) for r in filled.to_dict("records")}


@pytest.mark.slow
def test_explain_script_runs_on_smollm2(eedi_dataset, tmp_path):
    args = ["scripts/explain.py", "--input_csv", str(eedi_dataset["train_csv"]), "--output_dir", str(tmp_path / "e")]
    args += ["--max_rows", "3", "--max_new_tokens", "16", "--temperature", "0", "--batch_size", "3"]
    proc = run_script(*args)
    assert "3 explanations written, 0 already cached" in proc.stdout
    assert "0 explanations written, 3 already cached" in run_script(*args).stdout


# ------------------------------------------------------------------------------------------------------------------
# Recipes and bad settings
# ------------------------------------------------------------------------------------------------------------------
def test_bad_recipe_key_and_value_fail_clearly(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(CPU_RECIPE.read_text().replace("n_per_misconception:", "n_per_misconceptoin:"))
    proc = run_script("scripts/generate_synthetic.py", "--config", str(recipe), check=False)
    assert proc.returncode == 2 and "n_per_misconceptoin" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_script("scripts/generate_synthetic.py", "--config", str(CPU_RECIPE), "--backend", "llama", check=False)
    assert proc.returncode == 2 and "backend must be one of" in proc.stderr
    proc = run_script(
        "scripts/generate_synthetic.py", "--config", str(CPU_RECIPE), "--guided_json", "true", check=False
    )
    assert proc.returncode == 2 and "guided_json needs backend: vllm" in proc.stderr
    proc = run_script(
        "scripts/generate_synthetic.py",
        "--config",
        str(CPU_RECIPE),
        "--dataset_name",
        str(tmp_path / "nope"),
        check=False,
    )
    assert proc.returncode == 2 and "nope" in proc.stderr and "Traceback" not in proc.stderr


def test_a_retriever_trained_with_explanations_asks_for_them(eedi_dataset, tmp_path):
    """Its saved settings say the training queries ended with <LLMOutput>: a CSV without --explanations is refused in
    one line, and with them every query ends with its row's explanation."""
    import shutil

    from misconceptions import pivot_wrong_answers, resolve_model_path
    from misconceptions.retrieval import retrieve_candidates
    from misconceptions.settings import RetrieverSettings

    model = tmp_path / "retriever"
    shutil.copytree(resolve_model_path("builtin:all-MiniLM-L6-v2"), model)
    RetrieverSettings(base_model="builtin:all-MiniLM-L6-v2", explanations=True).save(model)
    csv, mapping = eedi_dataset["train_csv"], eedi_dataset["mapping_csv"]
    argv = [
        "scripts/retrieve.py",
        "--model",
        str(model),
        "--input_csv",
        str(csv),
        "--misconceptions_csv",
        str(mapping),
    ]
    proc = run_script(*argv, "--output_csv", str(tmp_path / "out.csv"), check=False)
    assert proc.returncode == 2 and "trained with <LLMOutput> explanations: pass --explanations" in proc.stderr
    assert not (tmp_path / "out.csv").exists()
    pairs = pivot_wrong_answers(read_questions_csv(csv))
    explain_rows(ScriptedBackend(lambda content, j: "The student adds the denominators."), pairs, tmp_path / "expl")
    candidates, settings, _ = retrieve_candidates(str(model), csv, mapping, 5, explanations=str(tmp_path / "expl"))
    assert (
        settings.explanations
        and candidates["query"].str.endswith("<LLMOutput> The student adds the denominators.").all()
    )
