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
"""The Eedi retriever end to end on a few real questions and the packaged models: training with mined negatives and
best-checkpoint selection, retrieve.py's submission, metrics and cache, the candidates round trip into a second
training run, the SmolLM2 LoRA decoder path, last-token pooling under both padding sides, and bad input."""

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import torch
from datasets import Dataset, load_from_disk
from safetensors.torch import load_file
from trl import ModelConfig, TrlParser

from misconceptions import (
    RETRIEVER_META,
    RetrieverConfig,
    ScriptArguments,
    build_retriever,
    make_training_pairs,
    resolve_model_path,
    retrieval_metrics,
    search,
)
from misconceptions.settings import RetrieverSettings

from .conftest import EEDI_MINILM, EEDI_TINY, REPO, run_script


SMOLLM2 = REPO / "recipes" / "eedi" / "smollm2-lora-cpu.yaml"
MINILM, TINY = EEDI_MINILM, EEDI_TINY


@pytest.fixture
def minilm_run(eedi_minilm_run):
    """The session's tiny retriever (tests/conftest.py) -> (folder, training log)."""
    return eedi_minilm_run


def _retrieve(model, input_csv, mapping_csv, output_csv, *extra, check=True):
    return run_script(
        "scripts/retrieve.py",
        "--model",
        str(model),
        "--input_csv",
        str(input_csv),
        "--misconceptions_csv",
        str(mapping_csv),
        "--output_csv",
        str(output_csv),
        *extra,
        check=check,
    )


def test_minilm_trains_picks_best_checkpoint_and_saves(minilm_run, eedi_data):
    out, log = minilm_run
    for name in (
        "modules.json",
        "model.safetensors",
        "config_sentence_transformers.json",
        "README.md",
        RETRIEVER_META,
    ):
        assert (out / name).is_file(), name
    train = load_from_disk(str(eedi_data["dataset"]))["train"].to_pandas()
    meta = json.loads((out / RETRIEVER_META).read_text())
    assert meta["seen_misconception_ids"] == sorted(set(train.loc[train["fold"] != 0, "MisconceptionId"]))
    assert meta["loss_scale"] == 20.0 and meta["explanations"] is False  # read back by the reranker and retrieval
    assert "Training pairs:" in log and "1 hard negatives each" in log
    # The weights moved away from the packaged checkpoint.
    base = load_file(f"{resolve_model_path('builtin:all-MiniLM-L6-v2')}/model.safetensors")
    trained = load_file(str(out / "model.safetensors"))
    key = next(k for k in trained if k.endswith("encoder.layer.0.attention.self.query.weight"))
    base_key = next(k for k in base if k.endswith("encoder.layer.0.attention.self.query.weight"))
    assert not torch.equal(trained[key], base[base_key])
    # Two held-out evaluations chose the best checkpoint by MAP@25; the saved model is that one.
    state = json.loads((out / "trainer_state.json").read_text())
    evals = [e["eval_map@25"] for e in state["log_history"] if "eval_map@25" in e]
    assert len(evals) == 2 and state["best_metric"] == pytest.approx(max(evals))
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{2 * (1 + evals.index(max(evals)))}")
    results = json.loads((out / "eval_results.json").read_text())
    assert results["eval_map@25"] == pytest.approx(state["best_metric"], abs=1e-6)
    assert (
        results["eval_seen_rows"] + results["eval_unseen_rows"] == results["eval_rows"] == (train["fold"] == 0).sum()
    )
    for key in ("eval_recall@25", "eval_recall@50", "eval_recall@100", "eval_unseen_map@25", "eval_seen_map@25"):
        assert 0.0 <= results[key] <= 1.0


def test_retrieve_writes_submission_metrics_and_uses_the_cache(minilm_run, eedi_data, tmp_path):
    out, _ = minilm_run
    held_out = eedi_data["dataset"] / "fold0.csv"
    cache = tmp_path / "cache"
    # torch, as the training evaluation (the int8 default may move near-ties: tests/test_onnx.py)
    torch_backend = ("--backend", "torch")
    proc = _retrieve(
        out, held_out, eedi_data["mapping_csv"], tmp_path / "sub.csv", "--cache_dir", str(cache), *torch_backend
    )
    sub = pd.read_csv(tmp_path / "sub.csv", dtype=str)
    questions = pd.read_csv(held_out, dtype=str, keep_default_na=False)
    expected = [
        f"{q}_{x}"
        for q, c in zip(questions.QuestionId, questions.CorrectAnswer, strict=True)
        for x in "ABCD"
        if x != c
    ]
    assert list(sub.columns) == ["QuestionId_Answer", "MisconceptionId"] and list(sub.QuestionId_Answer) == expected
    known = set(pd.read_csv(eedi_data["mapping_csv"])["MisconceptionId"])
    for ids in sub.MisconceptionId:
        ranked = [int(i) for i in ids.split(" ")]
        assert len(ranked) == 25 == len(set(ranked)) and set(ranked) <= known
    metrics = json.loads((tmp_path / "sub_metrics.json").read_text())
    results = json.loads((out / "eval_results.json").read_text())
    for key in ("map@25", "recall@25", "recall@100", "seen_map@25", "unseen_map@25", "unseen_rows"):
        assert metrics[key] == pytest.approx(results[f"eval_{key}"], abs=1e-6), key  # retrieve.py == training eval
    assert metrics["misconception_embeddings_cached"] is False and "MAP@25" in proc.stdout and "unseen" in proc.stdout
    assert len(list(cache.glob("*.npy"))) == 1
    # Second run: the misconception embeddings come from the cache, with the same result; FAISS search agrees.
    _retrieve(
        out,
        held_out,
        eedi_data["mapping_csv"],
        tmp_path / "again.csv",
        "--cache_dir",
        str(cache),
        "--use_faiss",
        *torch_backend,
    )
    again = json.loads((tmp_path / "again_metrics.json").read_text())
    assert again["misconception_embeddings_cached"] is True and again["map@25"] == pytest.approx(metrics["map@25"])
    assert pd.read_csv(tmp_path / "again.csv").equals(pd.read_csv(tmp_path / "sub.csv"))


def test_candidates_feed_a_second_training_round(minilm_run, eedi_data, tmp_path):
    out, _ = minilm_run
    candidates_dir = tmp_path / "candidates"
    # The training fold's questions (fold 1 for a fold-0 model), as the Eedi reference solution's "infer_gen" step.
    _retrieve(
        out,
        eedi_data["dataset"] / "fold1.csv",
        eedi_data["mapping_csv"],
        tmp_path / "train_sub.csv",
        "--candidates_out",
        str(candidates_dir),
        "--candidates_k",
        "30",
    )
    candidates = load_from_disk(str(candidates_dir))
    assert {
        "QuestionId_Answer",
        "query",
        "MisconceptionId",
        "candidate_ids",
        "candidate_scores",
        "candidate_names",
    } <= set(candidates.column_names)
    # the retriever's settings travel with its candidates: the reranker blends at the retriever's loss scale
    assert RetrieverSettings.load(candidates_dir) == RetrieverSettings.load(out)
    row = candidates[0]
    assert len(row["candidate_ids"]) == 30 and row["candidate_scores"] == sorted(row["candidate_scores"], reverse=True)
    names = pd.read_csv(eedi_data["mapping_csv"]).set_index("MisconceptionId")["MisconceptionName"]
    assert row["candidate_names"] == [names[i] for i in row["candidate_ids"]]
    second = tmp_path / "round2"
    proc = run_script(
        "scripts/train_retriever.py",
        "--config",
        str(MINILM),
        "--dataset_name",
        str(eedi_data["dataset"]),
        "--output_dir",
        str(second),
        *TINY,
        "--num_negatives",
        "2",
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--load_best_model_at_end",
        "false",
        "--hard_negatives_dataset",
        str(candidates_dir),
    )
    train = load_from_disk(str(eedi_data["dataset"]))["train"].to_pandas()
    n_train = int((train["fold"] != 0).sum())
    log = proc.stdout + proc.stderr
    assert f"Hard negatives for {n_train} of {n_train} training rows from {candidates_dir}; mining the other 0" in log
    assert (second / "eval_results.json").is_file()
    # The continued second round: the recipe file itself, started from the first round's retriever.
    continued = tmp_path / "round2-continued"
    run_script(
        "scripts/train_retriever.py",
        "--config",
        str(REPO / "recipes" / "eedi" / "minilm-cpu-round2-continued.yaml"),
        "--model_name_or_path",
        str(out),
        "--dataset_name",
        str(eedi_data["dataset"]),
        "--hard_negatives_dataset",
        str(candidates_dir),
        "--output_dir",
        str(continued),
        *TINY,
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--learning_rate",
        "0",
    )

    # At learning rate 0 the saved weights are the ones it started from: the first round's, not the packaged model's.
    def layer(folder) -> torch.Tensor:
        weights = load_file(f"{folder}/model.safetensors")
        return next(v for k, v in weights.items() if k.endswith("encoder.layer.0.attention.self.query.weight"))

    started_from = layer(continued)
    assert torch.equal(started_from, layer(out))
    assert not torch.equal(started_from, layer(resolve_model_path("builtin:all-MiniLM-L6-v2")))


def test_negatives_from_candidates_skip_the_positive(tmp_path):
    """Unit test of the second-round negatives: ranked candidates, positive skipped, range_min honoured."""
    train_df = pd.DataFrame(
        {
            "QuestionId_Answer": ["1_A", "2_B"],
            "query": ["q1", "q2"],
            "MisconceptionId": [10, 20],
            "MisconceptionName": ["m10", "m20"],
        }
    )
    misconceptions = pd.DataFrame(
        {"MisconceptionId": [10, 20, 30, 40, 50], "MisconceptionName": ["m10", "m20", "m30", "m40", "m50"]}
    )
    candidates = pd.DataFrame(
        {"QuestionId_Answer": ["1_A", "2_B"], "candidate_ids": [[30, 10, 40, 50], [20, 50, 10, 30]]}
    )
    folder = str(tmp_path / "candidates")
    Dataset.from_pandas(candidates).save_to_disk(folder)
    args = RetrieverConfig(output_dir="unused", num_negatives=2, hard_negatives_dataset=folder)
    pairs = make_training_pairs(train_df, misconceptions, args, model=None).to_pandas()
    assert pairs.to_dict("records") == [
        {"anchor": "q1", "positive": "m10", "negative_1": "m30", "negative_2": "m40"},
        {"anchor": "q2", "positive": "m20", "negative_1": "m50", "negative_2": "m10"},
    ]
    args = RetrieverConfig(
        output_dir="unused", num_negatives=1, hard_negatives_dataset=folder, hard_negatives_range_min=1
    )
    assert make_training_pairs(train_df, misconceptions, args, model=None)["negative_1"] == ["m40", "m10"]


def test_retrieval_metrics_hand_computed():
    ranked = [[1, 2, 3], [5, 2, 9], [7, 8, 4]]
    metrics = retrieval_metrics([1, 2, 4], ranked, seen={1, 2}, ks=(1, 3))
    assert metrics["map@25"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert metrics["recall@1"] == pytest.approx(1 / 3) and metrics["recall@3"] == 1.0
    assert metrics["seen_map@25"] == pytest.approx(0.75) and metrics["seen_rows"] == 2
    assert metrics["unseen_map@25"] == pytest.approx(1 / 3) and metrics["unseen_rows"] == 1
    assert "seen_map@25" not in retrieval_metrics([1], [[1]], seen=None)


def test_exact_search_and_faiss_agree():
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(200, 16)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[[5, 17, 99]] + 0.01 * rng.normal(size=(3, 16)).astype(np.float32)
    scores, indices = search(queries, docs, k=10)
    assert list(indices[:, 0]) == [5, 17, 99] and (np.diff(scores, axis=1) <= 0).all()
    f_scores, f_indices = search(queries, docs, k=10, use_faiss=True)
    assert (f_indices == indices).all() and np.allclose(f_scores, scores, atol=1e-5)
    brute = np.argsort(-(queries @ docs.T), axis=1)[:, :10]
    assert (brute == indices).all()


def _retrieve_main(argv):
    spec = importlib.util.spec_from_file_location("retrieve", REPO / "scripts" / "retrieve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


@pytest.mark.parametrize(
    ("case", "needles"),
    [
        ("missing_column", ["broken.csv", "missing column(s) ['AnswerCText']"]),
        ("unknown_id", ["column 'Misconception", "[123456]", "not in the misconception mapping", "row 2 (QuestionId"]),
        ("bad_letter", ["'CorrectAnswer' must be one of A, B, C, D", "['Z']", "row 1 (QuestionId"]),
        ("empty_file", ["broken.csv: the file is empty"]),
    ],
)
def test_retrieve_bad_input(eedi_data, tmp_path, capsys, case, needles):
    df = pd.read_csv(eedi_data["dataset"] / "fold0.csv", dtype=str, keep_default_na=False)
    if case == "missing_column":
        df = df.drop(columns=["AnswerCText"])
    elif case == "unknown_id":
        wrong = next(x for x in "ABCD" if x != df.loc[1, "CorrectAnswer"])
        df.loc[1, f"Misconception{wrong}Id"] = "123456"
    elif case == "bad_letter":
        df.loc[0, "CorrectAnswer"] = "Z"
    path = tmp_path / "broken.csv"
    path.write_text("") if case == "empty_file" else df.to_csv(path, index=False)
    out = tmp_path / "sub.csv"
    argv = ["--model", str(resolve_model_path("builtin:all-MiniLM-L6-v2")), "--input_csv", str(path)]
    argv += ["--misconceptions_csv", str(eedi_data["mapping_csv"]), "--output_csv", str(out)]
    argv += ["--candidates_out", str(tmp_path / "cands")]
    with pytest.raises(SystemExit) as exit_info:
        _retrieve_main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.csv"], "no partial output"


def test_unknown_fold_fails_before_writing(eedi_data, tmp_path):
    out = tmp_path / "run"
    proc = run_script(
        "scripts/train_retriever.py",
        "--config",
        str(MINILM),
        "--dataset_name",
        str(eedi_data["dataset"]),
        "--output_dir",
        str(out),
        "--fold",
        "7",
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--fold 7 is not a fold of this dataset; its folds are [0, 1] (or -1 for all)" in proc.stderr
    assert not out.exists()


def test_zero_shot_packaged_model_retrieves(eedi_data, tmp_path):
    """Any sentence-transformers folder works with retrieve.py (no metadata: no seen/unseen split)."""
    proc = _retrieve(
        resolve_model_path("builtin:all-MiniLM-L6-v2"),
        eedi_data["train_csv"],
        eedi_data["mapping_csv"],
        tmp_path / "zs.csv",
        "--cache_dir",
        str(tmp_path / "cache"),
    )
    metrics = json.loads((tmp_path / "zs_metrics.json").read_text())
    assert metrics["rows"] == len(load_from_disk(str(eedi_data["dataset"]))["train"]) and "seen_rows" not in metrics
    assert metrics["recall@100"] >= metrics["recall@50"] >= metrics["recall@25"] > 0.0
    assert "MAP@25" in proc.stdout


def test_dataset_rows_give_the_csv_s_candidates(eedi_data, tmp_path):
    """retrieve.py --dataset (a fold, or every row) feeds the model the rows of the same questions' wide CSV in the
    same order, so the candidates and scores are identical (int8 ONNX, the default on a CPU, scales per batch)."""
    model, dataset, mapping = (
        resolve_model_path("builtin:all-MiniLM-L6-v2"),
        eedi_data["dataset"],
        eedi_data["mapping_csv"],
    )
    sources = {
        "csv0": ["--input_csv", str(dataset / "fold0.csv"), "--misconceptions_csv", str(mapping)],
        "dataset0": ["--dataset", str(dataset), "--fold", "0"],
        "csv": ["--input_csv", str(eedi_data["train_csv"]), "--misconceptions_csv", str(mapping)],
        "dataset": ["--dataset", str(dataset)],
    }
    frames, metrics = {}, {}
    for name, source in sources.items():
        argv = ["--model", model, *source, "--output_csv", str(tmp_path / f"{name}.csv"), "--batch_size", "16"]
        run_script("scripts/retrieve.py", *argv, "--candidates_out", str(tmp_path / name), "--candidates_k", "30")
        frames[name] = load_from_disk(str(tmp_path / name)).to_pandas()
        metrics[name] = json.loads((tmp_path / f"{name}_metrics.json").read_text())
        metrics[name].pop("misconception_embeddings_cached")
    for csv, rows in (("csv0", "dataset0"), ("csv", "dataset")):
        a, b = frames[csv], frames[rows]
        assert len(a) == len(b) > 0 and a["QuestionId_Answer"].tolist() == b["QuestionId_Answer"].tolist()
        assert a["query"].tolist() == b["query"].tolist()
        assert a["MisconceptionId"].fillna(-1).tolist() == b["MisconceptionId"].fillna(-1).tolist()
        assert [list(x) for x in a["candidate_ids"]] == [list(x) for x in b["candidate_ids"]]
        assert np.array_equal(np.stack(a["candidate_scores"]), np.stack(b["candidate_scores"]))
        assert metrics[csv] == metrics[rows]
    assert frames["dataset0"]["MisconceptionId"].isna().any(), "the unlabelled split's rows are retrieved too"


@pytest.mark.parametrize(
    ("case", "needles"),
    [
        ("unknown_fold", ["--fold 7 is not one of its folds [0, 1]"]),
        ("missing_column", ["lacks column(s) ['AnswerText']", "build_eedi.py"]),
        ("both_inputs", ["give either --input_csv or --dataset, not both"]),
        ("no_input", ["give the questions: --input_csv (a question CSV) or --dataset"]),
        ("fold_without_dataset", ["--fold selects rows of --dataset"]),
    ],
)
def test_retrieve_bad_dataset_input(eedi_data, tmp_path, capsys, case, needles):
    dataset = str(eedi_data["dataset"])
    if case == "missing_column":
        dataset = str(tmp_path / "broken")
        built = load_from_disk(str(eedi_data["dataset"]))
        for split in ("train", "unlabelled"):
            built[split] = built[split].remove_columns("AnswerText")
        built.save_to_disk(dataset)
        capsys.readouterr()  # the save's progress bars
    source = {
        "unknown_fold": ["--dataset", dataset, "--fold", "7"],
        "missing_column": ["--dataset", dataset, "--fold", "0"],
        "both_inputs": ["--dataset", dataset, "--input_csv", str(eedi_data["train_csv"])],
        "fold_without_dataset": ["--input_csv", str(eedi_data["train_csv"]), "--fold", "0"],
        "no_input": [],
    }[case]
    out = tmp_path / "out"
    argv = ["--model", str(resolve_model_path("builtin:all-MiniLM-L6-v2")), *source]
    argv += ["--misconceptions_csv", str(eedi_data["mapping_csv"]), "--output_csv", str(out / "sub.csv")]
    with pytest.raises(SystemExit) as exit_info:
        _retrieve_main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    assert not out.exists(), "no partial output"


@pytest.mark.slow
def test_smollm2_lora_recipe_trains_and_reloads(eedi_data, tmp_path):
    """The Eedi reference solution's decoder path, through the SmolLM2 LoRA recipe: 4-bit base, LoRA on every linear
    layer with its own learning rate, gradient checkpointing, last-token pooling; LoRA weights change and retrieve.py
    reloads the same model. The base is the tiny random Qwen2 (the reference's architecture, a fraction of SmolLM2's
    compute): this is about the mechanics; the recipe's SmolLM2 itself is trained by the listwise and QLoRA tests."""
    from .tiny_models import cached_tiny_model

    out = tmp_path / "smollm2"
    run_script(
        "scripts/train_retriever.py",
        "--config",
        str(SMOLLM2),
        "--model_name_or_path",
        str(cached_tiny_model("qwen2")),
        "--dataset_name",
        str(eedi_data["dataset"]),
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--gradient_accumulation_steps",
        "1",
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--load_best_model_at_end",
        "false",
        "--query_max_length",
        "48",
        "--document_max_length",
        "24",
        "--num_negatives",
        "1",
        "--warmup_steps",
        "0",
    )
    adapter = load_file(str(out / "adapter_model.safetensors"))
    lora_b = [k for k in adapter if "lora_B" in k]
    modules = {k.split(".")[-3] for k in lora_b}
    assert modules == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}, modules
    # lora_B starts at zero: non-zero weights mean the LoRA layers trained (through gradient checkpointing).
    assert all(adapter[k].abs().sum() > 0 for k in lora_b)
    # The recipe's gradient checkpointing reached the trainer (read from the arguments it saved, not from its log,
    # whose level depends on what ran before in the process).
    assert torch.load(out / "training_args.bin", weights_only=False).activation_checkpointing is True
    meta = json.loads((out / RETRIEVER_META).read_text())
    assert meta["pooling"] == "last_token" and meta["quantization"]["load_in_4bit"]
    _retrieve(out, eedi_data["dataset"] / "fold0.csv", eedi_data["mapping_csv"], tmp_path / "sub.csv")
    reloaded = json.loads((tmp_path / "sub_metrics.json").read_text())
    results = json.loads((out / "eval_results.json").read_text())
    assert reloaded["map@25"] == pytest.approx(results["eval_map@25"], abs=1e-4)
    assert reloaded["recall@25"] == pytest.approx(results["eval_recall@25"], abs=1e-4)


def _smollm2(padding_side: str, **kwargs):
    model_args = ModelConfig(model_name_or_path="builtin:SmolLM2-135M-Instruct", dtype="float32", **kwargs)
    args = RetrieverConfig(
        output_dir="unused", pooling="last_token", padding_side=padding_side, use_cpu=True, query_prompt=""
    )
    return build_retriever(model_args, args)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_last_token_pooling_under_both_padding_sides(padding_side):
    model = _smollm2(padding_side)
    texts = ["Adds the denominators", "Believes that multiplying by 0.1 is the same as dividing by 0.1 always", "x"]
    features = model.preprocess(texts)
    mask = features["attention_mask"]
    assert model.tokenizer.padding_side == padding_side and (mask == 0).any(), "the batch must be padded"
    pad_column = 0 if padding_side == "left" else -1
    assert (mask[:, pad_column] == 0).any()
    with torch.no_grad():
        batched = model(features)
        tokens = batched["token_embeddings"]
    # The pooled vector is the hidden state of the last real token of each row...
    last = [int(torch.nonzero(row).max()) for row in mask]
    expected = torch.stack([tokens[i, j] for i, j in enumerate(last)])
    assert torch.allclose(batched["sentence_embedding"], expected)
    # ...and equals encoding each text alone (no padding at all).
    alone = torch.stack([model.encode(t, convert_to_tensor=True) for t in texts])
    assert torch.allclose(batched["sentence_embedding"], alone, atol=1e-4)


def test_lora_gets_its_own_learning_rate(tmp_path):
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model_args = ModelConfig(
        model_name_or_path="builtin:SmolLM2-135M-Instruct",
        dtype="float32",
        use_peft=True,
        lora_task_type="FEATURE_EXTRACTION",
        lora_target_modules=["q_proj", "v_proj"],
    )
    args = RetrieverConfig(
        output_dir=str(tmp_path), pooling="last_token", use_cpu=True, learning_rate=1e-4, lora_learning_rate=5e-4
    )
    model = build_retriever(model_args, args)
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict({"anchor": ["a", "b"], "positive": ["c", "d"]}),
        loss=MultipleNegativesRankingLoss(model, scale=args.scale),
    )
    optimizer = trainer.create_optimizer()
    lora = {id(p) for n, p in model.named_parameters() if "lora_" in n}
    assert lora and all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)
    groups = [(g["lr"], {id(p) for p in g["params"]}) for g in optimizer.param_groups if g["params"]]
    assert set().union(*(ids for lr, ids in groups if lr == 5e-4)) == lora
    assert all(lr == 1e-4 for lr, ids in groups if not ids & lora)


def test_exp010_exp012_recipes_match_the_eedi_reference():
    from misconceptions.retrieval_training import NoFalseNegativesBatchSampler

    for name in ("exp010", "exp012"):
        parser = TrlParser((ScriptArguments, RetrieverConfig, ModelConfig))
        _, t, m = parser.parse_args_and_config(["--config", str(REPO / "recipes" / "eedi" / f"{name}.yaml")])
        assert m.model_name_or_path == "Qwen/Qwen2.5-32B-Instruct-GPTQ-Int4" and m.use_peft
        assert (m.lora_r, m.lora_alpha, m.lora_dropout) == (32, 64, 0.05)
        assert m.lora_target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        # 96 negatives per training batch of 16, as the reference: 6 per query
        assert t.pooling == "last_token" and t.num_negatives == 6 and t.scale == 20.0
        assert t.per_device_train_batch_size * t.gradient_accumulation_steps == 16 and t.num_train_epochs == 10
        assert (t.learning_rate, t.lora_learning_rate) == (1e-4, 5e-4)
        assert (t.query_max_length, t.document_max_length) == (144, 256) and t.activation_checkpointing
        assert t.query_prompt.startswith("Instruct: Given a math problem statement") and t.fold == 0
        assert t.batch_sampler is NoFalseNegativesBatchSampler and t.metric_for_best_model == "map@25"
        assert t.prompts == {"anchor": t.query_prompt} and t.router_mapping["negative_6"] == "document"
    assert t.hard_negatives_dataset == "data/eedi-exp010-fold0-candidates"  # exp012: the second round


def test_no_false_negatives_sampler_fills_batches_that_no_duplicates_cannot():
    """With many negatives per row, NO_DUPLICATES leaves batches nearly empty; the hand-written sampler keeps them full
    while guaranteeing what the loss needs: distinct positives, and no row's positive among the batch's negatives."""
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

    from misconceptions.retrieval_training import NoFalseNegativesBatchSampler

    rng = np.random.default_rng(0)
    names = [f"misconception {i}" for i in range(400)]
    rows = {"anchor": [f"query {i}" for i in range(300)], "positive": [names[i % 150] for i in range(300)]}
    for j in range(24):  # random negatives, never the row's own positive (as mined)
        rows[f"negative_{j + 1}"] = [names[(i % 150 + 1 + k) % 400] for i, k in enumerate(rng.integers(0, 399, 300))]
    dataset = Dataset.from_dict(rows)
    args = {"batch_size": 16, "drop_last": False, "generator": torch.Generator(), "seed": 0}
    ours = list(NoFalseNegativesBatchSampler(dataset, **args))
    theirs = list(NoDuplicatesBatchSampler(dataset, **args))
    assert np.mean([len(b) for b in theirs]) < 6
    assert np.mean([len(b) for b in ours]) > 14
    assert len(ours) == len(NoFalseNegativesBatchSampler(dataset, **args)) == 19
    for batch in ours:
        positives = [rows["positive"][i] for i in batch]
        negatives = {rows[f"negative_{j + 1}"][i] for i in batch for j in range(24)}
        assert len(set(positives)) == len(positives) and not set(positives) & negatives
    assert set().union(*map(set, ours)) <= set(range(300))
