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
"""MAP ensembles on the validation rows (issue 20's MAP levers), from finished classifier runs, in one run.

For each model folder (train_classifier.py runs with a TF-IDF blend, on the same split): the transformer alone, its
TF-IDF + logistic regression alone, its saved blend; then, over all the folders, nearest-neighbour votes over the
training explanations (the TF-IDF features of the first folder, cosine, distance-weighted, k in `--knn_k`), the
transformers averaged (several seeds or encoders), and equal-weight blends of the parts. Every row goes through the
ranking that predict_classifier.py uses (the question's labels, True_/False_ from the answer). No weight here is
fitted: the blends are equal averages, so nothing is tuned on the rows that are scored.

    python bench/map_ensemble.py --dataset data/demo/map --model_dir data/demo/map-minilm-cpu \
        --output bench/results/map_ensemble.json
"""

import argparse
import sys
import time

import numpy as np
from sklearn.neighbors import KNeighborsClassifier

from misconceptions import write_json
from misconceptions.classifier import LabelRanker, label_suffix, load_classifier, texts_for
from misconceptions.data import load_dataset_any, map_frame
from misconceptions.metrics import map_at_k
from misconceptions.profiling import cpu_info
from misconceptions.tfidf import tfidf_probs


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="data/demo/map", help="folder written by data_builders/build_map.py")
    parser.add_argument("--model_dir", nargs="+", required=True, help="train_classifier.py folders (TF-IDF blend on)")
    parser.add_argument("--knn_k", default="10", help="comma-separated neighbour counts for the kNN votes")
    parser.add_argument("--output", default="bench/results/map_ensemble.json", help="where the JSON is written")
    return parser.parse_args(argv)


def knn_probs(features, train_texts, train_labels, texts, model_labels, k: int) -> np.ndarray:
    """Distance-weighted votes of the k nearest training explanations (cosine on TF-IDF), over `model_labels`."""
    knn = KNeighborsClassifier(n_neighbors=k, metric="cosine", weights="distance", algorithm="brute")
    knn.fit(features.transform(train_texts), train_labels)
    raw = knn.predict_proba(features.transform(texts))
    column = {label: j for j, label in enumerate(model_labels)}
    out = np.zeros((len(texts), len(model_labels)), dtype=np.float32)
    for j, label in enumerate(knn.classes_):
        out[:, column[label]] = raw[:, j]
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    dataset = load_dataset_any(args.dataset)
    train, val = map_frame(dataset["train"]), map_frame(dataset["validation"])
    results: dict = {"command": "python bench/map_ensemble.py " + " ".join(argv or sys.argv[1:]), "rows": len(val)}
    parts: dict[str, np.ndarray] = {}
    first = None
    for folder in args.model_dir:
        classifier = load_classifier(folder)
        settings = classifier.settings
        if classifier.tfidf is None:
            raise SystemExit(f"{folder}: no TF-IDF blend saved (tfidf_weight 0); this bench needs one")
        if first is None:
            first = classifier
        elif (
            settings.model_labels != first.settings.model_labels
            or settings.text_template != first.settings.text_template
        ):
            raise SystemExit(f"{folder}: another label space or text template than {args.model_dir[0]}")
        texts = texts_for(val, settings.text_template)  # the same for every folder (checked above)
        started = time.perf_counter()
        parts[f"{folder} transformer"] = classifier.predict_probs(texts, 256)
        parts[f"{folder} tfidf"] = tfidf_probs(classifier.tfidf, texts, settings.model_labels)
        results.setdefault("seconds", {})[folder] = time.perf_counter() - started
        w = settings.tfidf_weight
        parts[f"{folder} saved blend ({w})"] = (1 - w) * parts[f"{folder} transformer"] + w * parts[f"{folder} tfidf"]
    settings = first.settings
    ranker = LabelRanker.from_settings(settings)
    questions, answers = val["QuestionId"].astype(str).tolist(), val["MC_Answer"].tolist()

    def map3(probs: np.ndarray) -> float:
        return map_at_k(val["label"].tolist(), ranker.rank(probs, questions, answers, k=3), 3)

    transformers = [parts[f"{f} transformer"] for f in args.model_dir]
    tfidf = parts[f"{args.model_dir[0]} tfidf"]
    if len(args.model_dir) > 1:
        parts["transformers averaged"] = np.mean(transformers, axis=0)
        parts["transformers averaged + tfidf (equal)"] = 0.5 * parts["transformers averaged"] + 0.5 * tfidf
    train_texts = texts_for(train, settings.text_template)
    train_labels = [label_suffix(label) if settings.label_target == "suffix" else label for label in train["label"]]
    features = first.tfidf.named_steps["features"]
    for k in (int(x) for x in args.knn_k.split(",") if x):
        knn = knn_probs(features, train_texts, train_labels, texts, settings.model_labels, k)
        parts[f"kNN votes (k={k})"] = knn
        parts[f"transformers + tfidf + kNN k={k} (equal thirds)"] = (np.mean(transformers, axis=0) + tfidf + knn) / 3
    results["map@3"] = {name: map3(probs) for name, probs in parts.items()}
    results["cpu"] = cpu_info()
    for name, score in results["map@3"].items():
        print(f"{score:.4f}  {name}")
    write_json(args.output, results)
    print(f"Wrote {args.output}")
    return results


if __name__ == "__main__":
    main()
