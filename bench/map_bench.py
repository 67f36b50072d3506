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
"""MAP benchmark: quality of recipes/map/minilm-cpu.yaml against TF-IDF + logistic regression on the same split,
the effect of the two prediction options, and speed against the MAP reference solution's naive setting (fixed
max-length padding, random batches; Trainer.predict on padded inputs), all in one run.

Usage:

    python bench/map_bench.py --data_dir ../shared/data/map --output bench/results/map_bench.json
    # reuse a finished minilm-cpu run on the same split instead of training it again:
    python bench/map_bench.py --data_dir ../shared/data/map --model_dir data/demo/map-minilm-cpu
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from datasets import Dataset
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

from misconceptions import (
    Classifier,
    LabelRanker,
    build_map_dataset,
    learn_question_table,
    load_classifier,
    map_at_k,
    map_frame,
    predict_probs,
    rank_dataframe,
    texts_for,
    write_json,
)


REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "map" / "minilm-cpu.yaml"


def train_recipe(dataset_dir: Path, output_dir: Path, *overrides: str) -> dict:
    """Run scripts/train_classifier.py as a user would and return its train_results.json."""
    command = [
        sys.executable,
        str(REPO / "scripts" / "train_classifier.py"),
        "--config",
        str(RECIPE),
        "--dataset_name",
        str(dataset_dir),
        "--output_dir",
        str(output_dir),
        *overrides,
    ]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO)
    return json.loads((output_dir / "train_results.json").read_text())


def tfidf_baseline(train_df, val_df, seed: int) -> dict:
    """TF-IDF (word 1-2 + char 2-5 grams) + logistic regression over the 65 labels (PLATFORM.md's reference)."""
    start = time.time()
    text = lambda df: (df["QuestionText"] + " " + df["MC_Answer"] + " " + df["StudentExplanation"]).tolist()  # noqa: E731
    word = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=3, sublinear_tf=True)
    x_train = hstack([word.fit_transform(text(train_df)), char.fit_transform(text(train_df))]).tocsr()
    x_val = hstack([word.transform(text(val_df)), char.transform(text(val_df))]).tocsr()
    clf = LogisticRegression(C=10, max_iter=300, random_state=seed).fit(x_train, train_df["label"])
    probs = clf.predict_proba(x_val).astype(np.float32)
    labels = list(clf.classes_)
    questions = learn_question_table(train_df)
    qids, answers = val_df["QuestionId"].tolist(), val_df["MC_Answer"].tolist()
    result = {"seconds": round(time.time() - start, 1)}
    for restrict in (False, True):
        for derive in (False, True):
            ranker = LabelRanker(labels, labels, questions, restrict_labels=restrict, derive_prefix=derive)
            score = map_at_k(val_df["label"].tolist(), ranker.rank(probs, qids, answers, k=3), k=3)
            result[f"map@3_restrict={restrict}_prefix={derive}"] = round(score, 4)
    return result


def naive_predict_rows_per_second(model, tokenizer, settings, val_df, batch_size: int) -> tuple[float, np.ndarray]:
    """The MAP reference solution's inference: Trainer.predict over inputs padded to max_length, in file order."""
    ds = Dataset.from_dict({"text": texts_for(val_df, settings.text_template)})
    ds = ds.map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=settings.max_length, padding="max_length"),
        batched=True,
        remove_columns=["text"],
    )
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(tmp, per_device_eval_batch_size=batch_size, use_cpu=True, report_to="none")
        trainer = Trainer(model=model, args=args, data_collator=DataCollatorWithPadding(tokenizer))
        start = time.time()
        logits = trainer.predict(ds).predictions
    return len(val_df) / (time.time() - start), logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data" / "map"))
    parser.add_argument("--model_dir", default=None, help="a finished minilm-cpu run on this split (else train it)")
    parser.add_argument("--work_dir", default=str(REPO / "data" / "bench"))
    parser.add_argument("--speed_steps", type=int, default=80, help="training steps timed per setting")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "map_bench.json"))
    args = parser.parse_args()
    work = Path(args.work_dir)
    results: dict = {"command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}

    # 1. The split the demo uses (build_map.py defaults: 20% stratified, seed 42)
    dataset_dir = work / "map"
    if not (dataset_dir / "dataset_dict.json").exists():
        build_map_dataset(Path(args.data_dir) / "train.csv", validation_size=0.2, seed=args.seed).save_to_disk(
            str(dataset_dir)
        )
    from datasets import load_from_disk

    dataset = load_from_disk(str(dataset_dir))
    train_df, val_df = map_frame(dataset["train"]), map_frame(dataset["validation"])
    results["rows"] = {"train": len(train_df), "validation": len(val_df)}

    # 2. TF-IDF + logistic regression, with and without the two prediction options
    print("== TF-IDF + logistic regression", flush=True)
    results["tfidf_lr"] = tfidf_baseline(train_df, val_df, args.seed)
    print(results["tfidf_lr"], flush=True)

    # 3. minilm-cpu: train (timed) or reuse, then score with the options on and off
    model_dir = Path(args.model_dir) if args.model_dir else work / "map-minilm-cpu"
    if args.model_dir is None and not (model_dir / "train_results.json").exists():
        train_recipe(dataset_dir, model_dir)
    train_results = json.loads((model_dir / "train_results.json").read_text())
    classifier = load_classifier(str(model_dir))
    model, tokenizer, settings = classifier.model, classifier.tokenizer, classifier.settings
    minilm = {
        "train_minutes_transformer": round(train_results["train_runtime"] / 60, 1),
        "model_dir": str(model_dir),
        "tfidf_weight": settings.tfidf_weight,
    }
    if (model_dir / "eval_results.json").exists():
        minilm["eval_results"] = json.loads((model_dir / "eval_results.json").read_text())
    variants = {"transformer_only": Classifier(model, tokenizer, settings, None), "recipe": classifier}
    for name, variant in variants.items():
        for restrict in (False, True):
            ranked = rank_dataframe(variant, val_df, restrict_labels=restrict, batch_size=128)
            score = map_at_k(val_df["label"].tolist(), ranked, k=3)
            minilm[f"{name}_map@3_restrict={restrict}_prefix=True"] = round(score, 4)
    results["minilm_cpu"] = minilm
    print(minilm, flush=True)

    # 4. Prediction speed: this toolkit's path vs Trainer.predict on max-length padding (same model, same rows)
    texts = texts_for(val_df, settings.text_template)
    start = time.time()
    probs = predict_probs(model, tokenizer, texts, settings.max_length, batch_size=128)
    ours = len(texts) / (time.time() - start)
    start = time.time()
    rank_dataframe(classifier, val_df, batch_size=128)
    recipe_path = len(texts) / (time.time() - start)
    naive, logits = naive_predict_rows_per_second(model, tokenizer, settings, val_df, batch_size=128)
    agree = float(np.mean(np.argmax(logits, axis=1) == np.argmax(probs, axis=1)))
    results["predict_rows_per_second"] = {
        "toolkit_transformer": round(ours, 1),
        "toolkit_recipe_with_tfidf_and_ranking": round(recipe_path, 1),
        "naive_trainer_predict": round(naive, 1),
        "ratio": round(ours / naive, 2),
        "top1_agreement": round(agree, 4),
    }
    print(results["predict_rows_per_second"], flush=True)

    # 5. Training speed: the recipe (dynamic padding, length-grouped batches) vs the naive setting, same steps
    common = [
        "--max_steps",
        str(args.speed_steps),
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--load_best_model_at_end",
        "false",
        "--overwrite_output_dir",
        "true",
        "--tfidf_weight",
        "0",
    ]
    recipe = train_recipe(dataset_dir, work / "speed-recipe", *common)
    naive_run = train_recipe(
        dataset_dir,
        work / "speed-naive",
        *common,
        "--pad_to_max_length",
        "true",
        "--train_sampling_strategy",
        "random",
    )
    results["train_samples_per_second"] = {
        "recipe": recipe["train_samples_per_second"],
        "naive": naive_run["train_samples_per_second"],
        "ratio": round(recipe["train_samples_per_second"] / naive_run["train_samples_per_second"], 2),
        "steps": args.speed_steps,
    }
    print(results["train_samples_per_second"], flush=True)
    write_json(args.output, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
