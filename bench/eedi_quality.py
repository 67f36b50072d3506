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
"""Eedi retrieval quality and speed on one held-out fold, in one run: TF-IDF, zero-shot all-MiniLM-L6-v2, and a
fine-tuned retriever (a train_retriever.py folder), each scored against all misconceptions (MAP@25, recall@25/50/100,
seen and unseen misconceptions apart); plus the retriever's query encoding throughput and the search latency.

Usage:

    python bench/eedi_quality.py --dataset data/eedi --fold 0 --model data/eedi-minilm-cpu \
        --output bench/results/eedi_quality.json
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from misconceptions import (
    load_eedi_dataset,
    load_retriever,
    query_texts,
    resolve_model_path,
    retrieval_metrics,
    search,
    split_fold,
    write_json,
)
from misconceptions.retrieval import encode_documents, encode_queries


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="data/eedi", help="folder written by data_builders/build_eedi.py")
    parser.add_argument("--fold", type=int, default=0, help="held-out fold (default 0)")
    parser.add_argument("--model", default=None, help="fine-tuned retriever folder (train_retriever.py output)")
    parser.add_argument("--batch_size", type=int, default=64, help="texts per forward pass (default 64)")
    parser.add_argument("--output", default="bench/results/eedi_quality.json", help="where the JSON is written")
    return parser.parse_args(argv)


def tfidf_scores(queries: list[str], documents: list[str]) -> np.ndarray:
    """Word 1-2 grams + char 2-5 grams, fitted on the documents and queries; cosine scores."""
    word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1).fit(documents + queries)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True).fit(documents + queries)
    q = normalize(hstack([word.transform(queries), char.transform(queries)]).tocsr())
    d = normalize(hstack([word.transform(documents), char.transform(documents)]).tocsr())
    return (q @ d.T).toarray()


def ranked_from_scores(scores: np.ndarray, corpus_ids: np.ndarray, k: int = 100) -> np.ndarray:
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return corpus_ids[order]


def dense_run(model, queries: list[str], documents: list[str], batch_size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    started = time.perf_counter()
    document_embeddings = encode_documents(model, documents, batch_size)
    doc_seconds = time.perf_counter() - started
    started = time.perf_counter()
    query_embeddings = encode_queries(model, queries, batch_size)
    query_seconds = time.perf_counter() - started
    speed = {
        "queries_per_second": len(queries) / query_seconds,
        "misconceptions_per_second": len(documents) / doc_seconds,
    }
    return query_embeddings, document_embeddings, speed


def search_latency(query_embeddings: np.ndarray, document_embeddings: np.ndarray, k: int = 25) -> dict:
    """Median milliseconds per single-query search and per full-batch search, exact numpy and FAISS flat."""
    out = {}
    for name, use_faiss in (("exact", False), ("faiss_flat", True)):
        singles = []
        for row in query_embeddings[:200]:
            started = time.perf_counter()
            search(row[None, :], document_embeddings, k, use_faiss=use_faiss)
            singles.append(1000 * (time.perf_counter() - started))
        batches = []
        for _ in range(3):
            started = time.perf_counter()
            search(query_embeddings, document_embeddings, k, use_faiss=use_faiss)
            batches.append(1000 * (time.perf_counter() - started))
        out[name] = {
            "ms_per_single_query": statistics.median(singles),
            f"ms_per_batch_of_{len(query_embeddings)}": statistics.median(batches),
        }
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    pairs, misconceptions = load_eedi_dataset(args.dataset)
    frame = pairs["train"].to_pandas()
    train_df, eval_df = split_fold(frame, args.fold)
    seen = {int(i) for i in train_df["MisconceptionId"]}
    actual = eval_df["MisconceptionId"].astype(int).tolist()
    corpus_ids = misconceptions["MisconceptionId"].to_numpy()
    documents = misconceptions["MisconceptionName"].tolist()
    seed_queries = query_texts(eval_df)
    results: dict = {
        "dataset": args.dataset,
        "fold": args.fold,
        "held_out_rows": len(eval_df),
        "misconceptions": len(documents),
        "torch_threads": torch.get_num_threads(),
        "methods": {},
    }

    # 1. TF-IDF over the Eedi reference solution's query text (`<Question> ... <Correct Answer> ...`)
    started = time.perf_counter()
    ranked = ranked_from_scores(tfidf_scores(seed_queries, documents), corpus_ids)
    results["methods"]["tfidf"] = retrieval_metrics(actual, ranked, seen) | {"seconds": time.perf_counter() - started}

    # 2. Zero-shot all-MiniLM-L6-v2 (no prompt: it was not trained with instructions)
    zero_shot, _ = load_retriever(resolve_model_path("builtin:all-MiniLM-L6-v2"))
    q, d, speed = dense_run(zero_shot, seed_queries, documents, args.batch_size)
    _, indices = search(q, d, 100)
    results["methods"]["zero_shot_minilm"] = retrieval_metrics(actual, corpus_ids[indices], seen) | speed

    # 3. The fine-tuned retriever, with its own query format and prompt
    if args.model:
        model, settings = load_retriever(args.model)
        if settings.fold not in (None, args.fold):
            print(f"warning: {args.model} was trained with fold {settings.fold} held out, not {args.fold}")
        queries = query_texts(eval_df, settings.query_template)
        q, d, speed = dense_run(model, queries, documents, args.batch_size)
        _, indices = search(q, d, 100)
        results["methods"]["fine_tuned"] = retrieval_metrics(actual, corpus_ids[indices], seen) | speed
        results["fine_tuned_model"] = args.model
        results["search_latency"] = search_latency(q, d)

    write_json(args.output, results)
    print("| method | MAP@25 | recall@25 | recall@50 | recall@100 | seen MAP@25 | unseen MAP@25 | queries/s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, m in results["methods"].items():
        qps = f"{m['queries_per_second']:.1f}" if "queries_per_second" in m else "-"
        print(
            f"| {name} | {m['map@25']:.4f} | {m['recall@25']:.4f} | {m['recall@50']:.4f} | {m['recall@100']:.4f} "
            f"| {m['seen_map@25']:.4f} | {m['unseen_map@25']:.4f} | {qps} |"
        )
    if "search_latency" in results:
        print(json.dumps(results["search_latency"], indent=2))
    print(f"Wrote {Path(args.output)}")
    return results


if __name__ == "__main__":
    main()
