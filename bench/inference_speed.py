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
"""CPU inference speed, peak memory and accuracy per backend, in one run: the MAP classifier on the full validation
split (end to end after model load: tokenization, model, TF-IDF blend, label ranking) with Trainer.predict (the
train-time evaluation path), torch (`predict_probs`), onnx and onnx-int8; the Eedi retriever's query encoding on
the held-out fold with torch, onnx and onnx-int8 (documents encoded per backend too: fp32 ONNX for both ONNX
backends; then MAP@25).

Every measurement runs in its own process (peak RSS is per process); the ONNX exports are built first, so no
measurement includes an export. The machine's load average is recorded around each one. optimum could not be used:
optimum-onnx requires transformers<4.58 (see src/misconceptions/onnx_export.py).

Usage:

    python bench/inference_speed.py --map_model data/demo/map-minilm-cpu --map_csv data/demo/map/validation.csv \
        --eedi_model data/demo/eedi-minilm-cpu --eedi_csv data/demo/eedi/fold0.csv \
        --misconceptions_csv ../shared/data/eedi/misconception_mapping.csv --output bench/results/inference_speed.json
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from misconceptions.profiling import cpu_info


REPO = Path(__file__).resolve().parents[1]
MAP_BACKENDS = ("trainer.predict", "torch", "onnx", "onnx-int8")
EEDI_BACKENDS = ("torch", "onnx", "onnx-int8")


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class TrainerPredict:
    """`Classifier.onnx`'s interface over transformers' Trainer.predict (dynamic padding, file order, the recipe's
    eval batch size): the path train-time evaluation takes."""

    def __init__(self, model, tokenizer, batch_size: int):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    def predict_probs(self, texts: list[str], max_length: int, batch_size: int) -> np.ndarray:
        import tempfile

        import torch
        from datasets import Dataset
        from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

        ds = Dataset.from_dict({"text": texts}).map(
            lambda b: self.tokenizer(b["text"], truncation=True, max_length=max_length),
            batched=True,
            remove_columns=["text"],
        )
        with tempfile.TemporaryDirectory() as tmp:
            args = TrainingArguments(
                tmp, per_device_eval_batch_size=self.batch_size, use_cpu=True, report_to="none", disable_tqdm=True
            )
            trainer = Trainer(model=self.model, args=args, data_collator=DataCollatorWithPadding(self.tokenizer))
            logits = trainer.predict(ds).predictions
        return torch.softmax(torch.from_numpy(logits).float(), dim=-1).numpy()


def map_worker(args) -> dict:
    from misconceptions import load_classifier, map_at_k, rank_dataframe, read_map_csv

    df = read_map_csv(args.map_csv, require_labels=True, allow_empty_explanation=True)
    backend = "torch" if args.backend == "trainer.predict" else args.backend
    started = time.perf_counter()
    classifier = load_classifier(args.map_model, backend=backend)
    load_seconds = time.perf_counter() - started
    assert classifier.backend == backend, f"{args.backend} fell back to {classifier.backend}"
    if args.backend == "trainer.predict":
        classifier.onnx = TrainerPredict(classifier.model, classifier.tokenizer, args.trainer_batch_size)
    rss_loaded = rss_mb()
    rates = []
    for _ in range(args.repeats):  # the machine's speed drifts: the median of a few passes, and their spread
        started = time.perf_counter()
        ranked = rank_dataframe(classifier, df, top_k=3, batch_size=args.batch_size)
        rates.append(len(df) / (time.perf_counter() - started))
    return {
        "rows": len(df),
        "rows_per_second": round(float(np.median(rates)), 1),
        "rows_per_second_passes": [round(rate, 1) for rate in rates],
        "map@3": round(map_at_k(df["label"].tolist(), ranked, k=3), 4),
        "load_seconds": round(load_seconds, 2),
        "rss_after_load_mb": round(rss_loaded),
        "peak_rss_mb": round(peak_rss_mb()),
    }


def labelled_eedi_rows(args):
    """(misconceptions, the labelled wrong answers of --eedi_csv): what the Eedi benches encode and score."""
    from misconceptions.eedi import pivot_wrong_answers, read_misconceptions_csv, read_questions_csv

    misconceptions = read_misconceptions_csv(args.misconceptions_csv)
    questions = read_questions_csv(args.eedi_csv, misconception_ids=set(misconceptions["MisconceptionId"]))
    rows = pivot_wrong_answers(questions, misconceptions)
    return misconceptions, rows[rows["MisconceptionId"].notna()].reset_index(drop=True)


def eedi_worker(args) -> dict:
    from misconceptions import load_retriever, retrieval_metrics, search
    from misconceptions.eedi import query_texts
    from misconceptions.retrieval import encode_documents, encode_queries

    misconceptions, rows = labelled_eedi_rows(args)
    started = time.perf_counter()
    model, settings = load_retriever(args.eedi_model, backend=args.backend)
    load_seconds = time.perf_counter() - started
    assert getattr(model, "backend", "torch") == args.backend, f"{args.backend} fell back to torch"
    rss_loaded = rss_mb()
    queries = query_texts(rows, settings.query_template)
    rates = []
    for _ in range(args.repeats):  # the median of a few passes, and their spread
        started = time.perf_counter()
        query_embeddings = encode_queries(model, queries, args.batch_size)
        rates.append(len(queries) / (time.perf_counter() - started))
    started = time.perf_counter()
    documents = encode_documents(model, misconceptions["MisconceptionName"].tolist(), args.batch_size)
    document_rate = len(documents) / (time.perf_counter() - started)
    _, indices = search(query_embeddings, documents, 100)
    ranked = misconceptions["MisconceptionId"].to_numpy()[indices]
    metrics = retrieval_metrics(rows["MisconceptionId"].astype(int).tolist(), ranked)
    return {
        "queries": len(queries),
        "queries_per_second": round(float(np.median(rates)), 1),
        "queries_per_second_passes": [round(rate, 1) for rate in rates],
        "documents_per_second": round(document_rate, 1),
        "map@25": round(metrics["map@25"], 4),
        "recall@25": round(metrics["recall@25"], 4),
        "load_seconds": round(load_seconds, 2),
        "rss_after_load_mb": round(rss_loaded),
        "peak_rss_mb": round(peak_rss_mb()),
    }


def prepare(args) -> None:
    """Build every ONNX export and quantization before anything is timed."""
    from misconceptions import load_classifier, load_retriever

    for backend in ("onnx", "onnx-int8"):
        load_classifier(args.map_model, backend=backend)
        load_retriever(args.eedi_model, backend=backend)


def run_worker(task: str, backend: str, argv: list[str]) -> dict:
    load_before = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, __file__, *argv, "--worker", task, "--backend", backend],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "true"},
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["load_average_1min_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(f"{task:5s} {backend:16s} {result}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--map_model", default="data/demo/map-minilm-cpu")
    parser.add_argument("--map_csv", default="data/demo/map/validation.csv")
    parser.add_argument("--eedi_model", default="data/demo/eedi-minilm-cpu", help="a folder, Hub id or builtin:NAME")
    parser.add_argument("--eedi_csv", default="data/demo/eedi/fold0.csv")
    parser.add_argument("--misconceptions_csv", default="../shared/data/eedi/misconception_mapping.csv")
    parser.add_argument("--batch_size", type=int, default=64, help="predict_classifier.py's default")
    parser.add_argument("--eedi_batch_size", type=int, default=64, help="retrieve.py's default")
    parser.add_argument("--trainer_batch_size", type=int, default=256, help="the recipe's per_device_eval_batch_size")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per backend (median reported)")
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "inference_speed.json"))
    parser.add_argument("--worker", choices=("map", "eedi"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--backend", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from misconceptions.hub import resolve_model_dir

    args.map_model, args.eedi_model = resolve_model_dir(args.map_model), resolve_model_dir(args.eedi_model)
    if args.worker == "map":
        print(json.dumps(map_worker(args)))
        return
    if args.worker == "eedi":
        args.batch_size = args.eedi_batch_size
        print(json.dumps(eedi_worker(args)))
        return

    common = [
        *("--map_model", args.map_model, "--map_csv", args.map_csv, "--eedi_model", args.eedi_model),
        *("--eedi_csv", args.eedi_csv, "--misconceptions_csv", args.misconceptions_csv),
        *("--batch_size", str(args.batch_size), "--eedi_batch_size", str(args.eedi_batch_size)),
        *("--trainer_batch_size", str(args.trainer_batch_size), "--repeats", str(args.repeats)),
    ]
    prepare(args)
    import onnxruntime
    import torch

    results = {
        "command": "python " + " ".join([f"bench/{Path(__file__).name}", *sys.argv[1:]]),
        "cpus": os.cpu_count(),
        "cpu": cpu_info(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "map": {backend: run_worker("map", backend, common) for backend in MAP_BACKENDS},
        "eedi": {backend: run_worker("eedi", backend, common) for backend in EEDI_BACKENDS},
    }
    m, e = results["map"], results["eedi"]
    results["summary"] = {
        "map": {
            b: {
                "speedup_vs_trainer_predict": round(
                    m[b]["rows_per_second"] / m["trainer.predict"]["rows_per_second"], 2
                ),
                "speedup_vs_torch": round(m[b]["rows_per_second"] / m["torch"]["rows_per_second"], 2),
                "map@3_delta_vs_torch": round(m[b]["map@3"] - m["torch"]["map@3"], 4),
            }
            for b in MAP_BACKENDS
        },
        "eedi": {
            b: {
                "query_speedup_vs_torch": round(e[b]["queries_per_second"] / e["torch"]["queries_per_second"], 2),
                "map@25_delta_vs_torch": round(e[b]["map@25"] - e["torch"]["map@25"], 4),
            }
            for b in EEDI_BACKENDS
        },
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["summary"], indent=2))
    print(f"Wrote {output}")


if __name__ == "__main__":
    main()
