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
"""Eedi reranking end to end on the packaged models: the pointwise and listwise scripts (train_reranker.py, rerank.py,
predict_eedi.py), the candidates they read, and bad input. The listwise pieces are in test_listwise.py."""

import json

import numpy as np
import pandas as pd
import pytest
from datasets import load_from_disk

from misconceptions import InputError, resolve_model_path
from misconceptions.candidates import attach_folds, read_candidates
from misconceptions.pointwise import pointwise_logprobs
from misconceptions.rerank import apply_orders, keep_unseen_in_place
from misconceptions.rerank_model import RERANKER_META, load_reranker

from .conftest import REPO, run_script


LISTWISE = REPO / "recipes" / "eedi" / "reranker-smollm2-cpu.yaml"


# --- candidates: bad input ------------------------------------------------------------------------------------------
def _write_candidates(path, **overrides):
    from datasets import Dataset

    data = {
        "QuestionId_Answer": ["1_A", "1_B"],
        "query": ["q1", "q2"],
        "MisconceptionId": [1, 2],
        "candidate_ids": [[1, 2, 3], [2, 3, 1]],
        "candidate_scores": [[0.9, 0.5, 0.1], [0.8, 0.4, 0.2]],
        "candidate_names": [["a", "b", "c"], ["b", "c", "a"]],
    } | overrides
    Dataset.from_dict(data).save_to_disk(str(path))
    return path


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"candidate_ids": [[1, 2, 99], [2, 3, 1]]}, "row 1_A references misconception ids not in the mapping: [99]"),
        (
            {
                "candidate_ids": [[1, 2, 3], []],
                "candidate_scores": [[0.9, 0.5, 0.1], []],
                "candidate_names": [["a", "b", "c"], []],
            },
            "empty candidate list (e.g. 1_B)",
        ),
        ({"MisconceptionId": [1, 77]}, "rows 1_B are labelled with unknown misconception ids"),
        ({"candidate_scores": [[0.9, 0.5], [0.8, 0.4, 0.2]]}, "differ in length in rows 1_A"),
    ],
)
def test_bad_candidates_fail_naming_the_row(tmp_path, overrides, needle):
    path = _write_candidates(tmp_path / "c", **overrides)
    with pytest.raises(InputError) as err:
        read_candidates(str(path), {1: "a", 2: "b", 3: "c"})
    assert needle in str(err.value) and str(path) in str(err.value)


def test_candidates_from_other_data_fail_and_unlabelled_rows_are_left_out():
    pairs = pd.DataFrame({"QuestionId_Answer": ["1_A", "1_B"], "MisconceptionId": [1, 2], "fold": [0, 1]})
    candidates = pd.DataFrame(
        {"QuestionId_Answer": ["1_A", "1_B", "9_C"], "MisconceptionId": [1, 2, None], "candidate_ids": [[1]] * 3}
    )
    joined = attach_folds(candidates, pairs, "cands")
    assert joined["QuestionId_Answer"].tolist() == ["1_A", "1_B"] and joined["fold"].tolist() == [0, 1]
    candidates.loc[2, "MisconceptionId"] = 5  # a labelled row the dataset does not have: different data
    with pytest.raises(InputError, match="cands: 1 labelled candidate rows are not in the dataset"):
        attach_folds(candidates, pairs, "cands")


def test_missing_column_and_path_fail(tmp_path):
    from datasets import Dataset

    Dataset.from_dict({"QuestionId_Answer": ["1_A"], "candidate_ids": [[1]]}).save_to_disk(str(tmp_path / "c"))
    with pytest.raises(InputError, match="lack column 'query'"):
        read_candidates(str(tmp_path / "c"))
    with pytest.raises((InputError, FileNotFoundError)):
        read_candidates(str(tmp_path / "missing"))


def test_seen_scope_moves_only_the_seen_candidates():
    ids = [[10, 11, 12, 13, 14, 15]]
    seen = [11, 13, 14]
    reverse = [np.arange(5, -1, -1)]  # the reranker's order: 15, 14, 13, 12, 11, 10
    assert apply_orders(ids, reverse, 6).tolist() == [[15, 14, 13, 12, 11, 10]]
    kept = keep_unseen_in_place(ids, reverse, seen)
    # 10, 12 and 15 hold positions 0, 2 and 5; the seen ones fill positions 1, 3, 4 in the reranker's order
    assert apply_orders(ids, kept, 6).tolist() == [[10, 14, 12, 13, 11, 15]]
    # nothing seen: the retriever's order; everything seen: the reranker's
    assert apply_orders(ids, keep_unseen_in_place(ids, reverse, []), 6).tolist() == [ids[0]]
    assert apply_orders(ids, keep_unseen_in_place(ids, reverse, ids[0]), 6).tolist() == [[15, 14, 13, 12, 11, 10]]
    # only the reranked top k is touched; the rest follows in the retriever's order
    top3 = [np.array([2, 1, 0])]
    assert apply_orders(ids, keep_unseen_in_place(ids, top3, [10, 12]), 3).tolist() == [[12, 11, 10, 13, 14, 15]]


# --- scripts end to end ---------------------------------------------------------------------------------------------
def test_pointwise_trains_and_reranks_the_held_out_fold(pointwise_run, eedi, tmp_path):
    out = pointwise_run
    for name in ("model.safetensors", "README.md", RERANKER_META, "eval_results.json", "eval_predictions.csv"):
        assert (out / name).is_file(), name
    meta = json.loads((out / RERANKER_META).read_text())
    assert meta["reranker_type"] == "pointwise" and meta["blend_weight"] == 0.3
    assert meta["cpu_bf16"] == "auto"  # the recipe's choice, read again by rerank.py (and by the evaluation below)
    assert meta["retriever_scale"] == 12.5  # the candidates' retriever's loss scale, from its saved settings
    results = json.loads((out / "eval_results.json").read_text())
    train = load_from_disk(str(eedi["dataset"]))["train"].to_pandas()
    assert results["eval_rows"] == (train["fold"] == 0).sum()
    # rerank.py on the same candidates reports the training script's figures and writes a 25-id submission.
    held_out = tmp_path / "held_out"
    candidates = load_from_disk(str(eedi["candidates"]))
    keys = set(train.loc[train["fold"] == 0, "QuestionId_Answer"])
    candidates.filter(lambda row: row["QuestionId_Answer"] in keys).save_to_disk(str(held_out))
    proc = run_script(
        "scripts/rerank.py",
        "--model",
        str(out),
        "--candidates",
        str(held_out),
        "--output_csv",
        str(tmp_path / "reranked.csv"),
        "--misconceptions_csv",
        str(eedi["mapping"]),
    )
    metrics = json.loads((tmp_path / "reranked_metrics.json").read_text())
    for key in ("reranked_map@25", "retriever_map@25", "unseen_reranked_map@25", "reranked_recall@25"):
        assert metrics[key] == pytest.approx(results[f"eval_{key}"], abs=1e-6), key
    assert "after reranking" in proc.stdout
    sub = pd.read_csv(tmp_path / "reranked.csv", dtype=str)
    assert len(sub) == len(keys) and all(len(ids.split()) == 25 for ids in sub["MisconceptionId"])
    # The reranker reorders within the top 25 only: the same 25 ids as the retriever, in its own order.
    retrieved = {
        k: set(ids[:25]) for k, ids in zip(candidates["QuestionId_Answer"], candidates["candidate_ids"], strict=True)
    }
    for key, ids in zip(sub["QuestionId_Answer"], sub["MisconceptionId"], strict=True):
        assert {int(i) for i in ids.split()} == retrieved[key]
    # --rerank_scope seen: a misconception the reranker was never trained on keeps the retriever's position, so
    # the unseen rows score as retrieved
    run_script("scripts/rerank.py", "--model", str(out), "--candidates", str(held_out), "--rerank_scope", "seen",
               "--output_csv", str(tmp_path / "seen.csv"), "--misconceptions_csv", str(eedi["mapping"]))  # fmt: skip
    scoped = json.loads((tmp_path / "seen_metrics.json").read_text())
    assert scoped["unseen_rows"] > 0 and scoped["unseen_reranked_map@25"] == scoped["unseen_retriever_map@25"]
    seen = set(meta["seen_misconception_ids"])
    top25 = {
        key: list(ids[:25])
        for key, ids in zip(candidates["QuestionId_Answer"], candidates["candidate_ids"], strict=True)
    }
    scoped_sub = pd.read_csv(tmp_path / "seen.csv", dtype=str)
    for key, ids in zip(scoped_sub["QuestionId_Answer"], scoped_sub["MisconceptionId"], strict=True):
        ranked, retrieved_order = [int(i) for i in ids.split()], top25[key]
        assert sorted(ranked) == sorted(retrieved_order)
        assert all(ranked[p] == c for p, c in enumerate(retrieved_order) if c not in seen)


def test_bf16_scoring_is_close_to_fp32_and_really_bf16(pointwise_run, eedi):
    """The cross-encoder under bf16 autocast gives nearly the fp32 log-probabilities, but not the same ones (the
    autocast is really applied), as float64 like fp32's."""
    reranker = load_reranker(str(pointwise_run))
    frame = load_from_disk(str(eedi["candidates"])).to_pandas().head(6)
    names = [list(n[:10]) for n in frame["candidate_names"]]
    fp32 = pointwise_logprobs(reranker, frame["query"].tolist(), names)
    bf16 = pointwise_logprobs(reranker, frame["query"].tolist(), names, bf16=True)
    for a, b in zip(fp32, bf16, strict=True):
        assert b.dtype == np.float64 and a.shape == b.shape == (10,)
        np.testing.assert_allclose(a, b, atol=0.1)
    assert any(not np.array_equal(a, b) for a, b in zip(fp32, bf16, strict=True))


def test_predict_eedi_runs_the_whole_pipeline(pointwise_run, eedi, tmp_path):
    proc = run_script(
        "scripts/predict_eedi.py",
        "--retriever",
        resolve_model_path("builtin:all-MiniLM-L6-v2"),
        "--reranker",
        str(pointwise_run),
        "--input_csv",
        str(eedi["csv"]),
        "--misconceptions_csv",
        str(eedi["mapping"]),
        "--output_csv",
        str(tmp_path / "submission.csv"),
        "--candidates_k",
        "30",
    )
    sub = pd.read_csv(tmp_path / "submission.csv", dtype=str)
    retrieved = pd.read_csv(eedi["retrieved"], dtype=str)
    assert list(sub["QuestionId_Answer"]) == list(retrieved["QuestionId_Answer"])
    assert "Retrieved 30 candidates" in proc.stdout and "after reranking" in proc.stdout
    metrics = json.loads((tmp_path / "submission_metrics.json").read_text())
    alone = json.loads(eedi["retrieved"].with_name("retrieved_metrics.json").read_text())
    assert metrics["retriever_map@25"] == pytest.approx(alone["map@25"]) and metrics["rows"] == alone["rows"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--window", "0"], "--window must be at least 1"),
        (["--blend_weight", "2"], "--blend_weight must be between 0 and 1"),
        (["--model", "no/such-reranker-here"], "no/such-reranker-here"),
        (["--candidates", "no-such-candidates"], "no-such-candidates"),
        (["--cpu_bf16", "maybe"], "--cpu_bf16: invalid choice: 'maybe'"),
    ],
)
def test_rerank_bad_input_exits_cleanly_and_writes_nothing(pointwise_run, eedi, tmp_path, args, needle):
    base = {"--model": str(pointwise_run), "--candidates": str(eedi["candidates"])}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = [item for pair in base.items() for item in pair]
    proc = run_script("scripts/rerank.py", *argv, "--output_csv", str(tmp_path / "out.csv"), check=False)
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out.csv").exists()


def test_listwise_trains_saves_and_reranks_with_windows(eedi, tmp_path):
    out = tmp_path / "listwise"
    run_script(
        "scripts/train_reranker.py",
        "--config",
        str(LISTWISE),
        "--dataset_name",
        str(eedi["dataset"]),
        "--candidates",
        str(eedi["candidates"]),
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--gradient_accumulation_steps",
        "1",
        "--num_candidates",
        "5",
        "--final_eval_max_rows",
        "3",
        "--rerank_top_k",
        "6",
        "--window",
        "4",
        "--stride",
        "2",
    )
    meta = json.loads((out / RERANKER_META).read_text())
    assert meta["reranker_type"] == "listwise" and (meta["window"], meta["stride"]) == (4, 2)
    assert (out / "model.safetensors").is_file() and (out / "chat_template.jinja").is_file()
    results = json.loads((out / "eval_results.json").read_text())
    assert results["eval_rows"] == 3
    held_out = tmp_path / "three"
    load_from_disk(str(eedi["candidates"])).select(range(2)).save_to_disk(str(held_out))
    proc = run_script(
        "scripts/rerank.py",
        "--model",
        str(out),
        "--candidates",
        str(held_out),
        "--output_csv",
        str(tmp_path / "lw.csv"),
        "--window",
        "30",
        "--rerank_top_k",
        "8",
    )  # a window larger than the list: one window over the 8 candidates
    sub = pd.read_csv(tmp_path / "lw.csv", dtype=str)
    assert len(sub) == 2 and "after reranking" in proc.stdout


def test_exp015_recipe_matches_the_eedi_reference():
    from trl import ModelConfig, TrlParser

    from misconceptions import RerankerConfig, ScriptArguments

    parser = TrlParser((ScriptArguments, RerankerConfig, ModelConfig))
    _, t, m = parser.parse_args_and_config(["--config", str(REPO / "recipes" / "eedi" / "exp015.yaml")])
    assert m.model_name_or_path == "Qwen/Qwen2.5-32B-Instruct-GPTQ-Int4" and m.use_peft
    assert (m.lora_r, m.lora_alpha, m.lora_dropout, m.lora_task_type) == (32, 64, 0.05, "CAUSAL_LM")
    assert set(m.lora_target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert t.reranker_type == "listwise" and t.completion_only_loss and t.num_train_epochs == 2
    assert (t.window, t.stride) == (20, 10) and t.fp16 and t.activation_checkpointing


def test_blend_moves_from_the_reranker_to_the_retriever():
    from misconceptions.pointwise import orders_from_logprobs

    reranker = [np.log(np.array([0.1, 0.2, 0.7]))]  # the reranker prefers candidate 2
    retriever = [np.array([0.9, 0.5, 0.1])]  # the retriever prefers candidate 0 (cosine scores)
    assert orders_from_logprobs(reranker, retriever, 0.0, 20.0)[0].tolist() == [2, 1, 0]
    assert orders_from_logprobs(reranker, retriever, 1.0, 20.0)[0].tolist() == [0, 1, 2]
    # Halfway: 0.5 * log p_rerank + 0.5 * log softmax(20 * cos); candidate 0's retrieval margin (8 nats) wins.
    assert orders_from_logprobs(reranker, retriever, 0.5, 20.0)[0].tolist() == [0, 1, 2]
    assert orders_from_logprobs(reranker, retriever, 0.5, 1.0)[0].tolist() == [2, 1, 0]  # at scale 1 it does not


@pytest.mark.slow
def test_listwise_lora_on_a_4bit_base_saves_an_adapter_and_reloads(eedi, tmp_path):
    out = tmp_path / "qlora"
    common = ["--dataset_name", str(eedi["dataset"]), "--candidates", str(eedi["candidates"])]
    run_script(
        "scripts/train_reranker.py",
        "--config",
        str(LISTWISE),
        *common,
        "--output_dir",
        str(out),
        "--use_peft",
        "true",
        "--lora_task_type",
        "CAUSAL_LM",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
        "--load_in_4bit",
        "true",
        "--max_steps",
        "1",
        "--per_device_train_batch_size",
        "2",
        "--gradient_accumulation_steps",
        "1",
        "--num_candidates",
        "4",
        "--final_eval_max_rows",
        "2",
        "--rerank_top_k",
        "4",
        "--window",
        "4",
    )
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    meta = json.loads((out / RERANKER_META).read_text())
    assert meta["quantization"]["load_in_4bit"] and meta["base_model"] == "builtin:SmolLM2-135M-Instruct"
    in_training = json.loads((out / "eval_results.json").read_text())["eval_reranked_map@25"]
    held_out = tmp_path / "two"
    candidates = load_from_disk(str(eedi["candidates"]))
    train = load_from_disk(str(eedi["dataset"]))["train"].to_pandas()
    first_two = train.loc[train["fold"] == 0, "QuestionId_Answer"].tolist()[:2]
    candidates.filter(lambda row: row["QuestionId_Answer"] in first_two).save_to_disk(str(held_out))
    run_script(
        "scripts/rerank.py",
        "--model",
        str(out),
        "--candidates",
        str(held_out),
        "--output_csv",
        str(tmp_path / "q.csv"),
    )
    reloaded = json.loads((tmp_path / "q_metrics.json").read_text())["reranked_map@25"]
    assert reloaded == pytest.approx(in_training, abs=1e-6)  # the reloaded adapter ranks as the trained model did
