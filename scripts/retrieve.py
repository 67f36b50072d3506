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
"""Retrieve misconceptions for every wrong answer of an Eedi question CSV, or of a dataset built by
data_builders/build_eedi.py (--dataset, one --fold or all of them), and write the Kaggle submission
(QuestionId_Answer,MisconceptionId with --top_k space-separated ids per wrong answer).

The misconceptions are encoded once per (model, mapping file) and cached. With labelled input (the train.csv
layout), MAP@25 and recall@25/50/100 are written to <output stem>_metrics.json, seen and unseen misconceptions apart
when the model records its training misconceptions, with their plots in <output stem>_plots/. With --candidates_out,
the top --candidates_k misconceptions and their scores are saved as a dataset: the reranker's input, and hard
negatives for a second retriever round (train_retriever.py --hard_negatives_dataset DIR).

Usage:

    python scripts/retrieve.py --model data/eedi-minilm-cpu --dataset data/eedi --fold 0 \
        --output_csv data/eedi_fold0_submission.csv \
        [--top_k 25] [--candidates_out data/eedi-minilm-cpu-candidates] [--use_faiss] \
        [--backend {auto,torch,onnx,onnx-int8}]
    python scripts/retrieve.py --model data/eedi-minilm-cpu --input_csv ../shared/data/eedi/test.csv \
        --misconceptions_csv ../shared/data/eedi/misconception_mapping.csv --output_csv data/eedi_submission.csv

--dataset reads the built dataset's rows as they are (its `train` and `unlabelled` splits, in question order) and
its misconceptions table (unless --misconceptions_csv is given): the same rows, in the same order, as --input_csv on
the fold's wide CSV, so the same scores.

--model A B (fold models of one recipe) retrieves with both: each misconception scored by their mean cosine
similarity (bench/RESULTS.md, "Fold models combined"); their training misconceptions together count as seen.

--backend auto (the default) is onnx-int8 on a CPU and torch on a GPU: queries run through ONNX Runtime in int8
(about 2.4-2.9x torch on a 2-core VNNI CPU), the misconception descriptions in fp32 (encoded once, cached). int8
quantizes activations with one scale per batch, so MAP@25 moves a little with --batch_size (-0.0020 to +0.0026 from
torch in bench/RESULTS.md); --backend onnx gives torch's scores exactly. The exported model is cached beside the
model (src/misconceptions/onnx_export.py).
"""

import argparse
import logging

import numpy as np

from misconceptions import InputError, atomic_path, cli_entry, retrieval_metrics, write_json
from misconceptions.candidates import save_candidates, submission_frame
from misconceptions.cli import add_backend_argument, check_output_file, setup_script_logging
from misconceptions.eedi import dataset_rows, load_eedi_dataset
from misconceptions.hub import resolve_model_dir
from misconceptions.plots import plot_eedi, prediction_plots_dir
from misconceptions.retrieval import retrieve_candidates


logger = logging.getLogger(__name__)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        required=True,
        nargs="+",
        help="folder written by train_retriever.py, or a Hub model id; several (one per fold) combine by mean cosine",
    )
    parser.add_argument("--input_csv", default=None, help="Eedi questions, test.csv layout (train.csv adds scoring)")
    parser.add_argument(
        "--dataset", default=None, help="instead of --input_csv: a build_eedi.py folder or Hub id (labelled: scored)"
    )
    parser.add_argument(
        "--fold", type=int, default=None, help="with --dataset: only this fold's wrong answers (default: every fold)"
    )
    parser.add_argument(
        "--misconceptions_csv",
        default=None,
        help="misconception_mapping.csv (id, name); required with --input_csv, default the dataset's with --dataset",
    )
    parser.add_argument("--output_csv", required=True, help="where the submission CSV is written")
    parser.add_argument("--top_k", type=int, default=25, help="misconceptions per wrong answer (default 25)")
    parser.add_argument("--candidates_out", default=None, help="also save the top candidates as a dataset here")
    parser.add_argument("--candidates_k", type=int, default=100, help="candidates saved per row (default 100)")
    parser.add_argument("--batch_size", type=int, default=64, help="texts per forward pass (default 64)")
    parser.add_argument("--use_faiss", action="store_true", help="search with a FAISS flat index (also exact)")
    add_backend_argument(parser, "retriever")
    parser.add_argument("--cache_dir", default=None, help="embedding cache (default $MISCONCEPTIONS_CACHE/embeddings)")
    parser.add_argument(
        "--explanations", default=None, help="scripts/explain.py folder: add <LLMOutput> to the queries"
    )
    return parser.parse_args(argv)


@cli_entry
def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_script_logging()
    if args.top_k < 1 or args.candidates_k < 1:
        raise InputError("--top_k and --candidates_k must be at least 1")
    if args.input_csv is None and args.dataset is None:
        raise InputError("give the questions: --input_csv (a question CSV) or --dataset (a build_eedi.py dataset)")
    if args.input_csv is not None and args.dataset is not None:
        raise InputError("give either --input_csv or --dataset, not both")
    if args.input_csv and args.misconceptions_csv is None:
        raise InputError("--input_csv needs --misconceptions_csv (misconception_mapping.csv)")
    if args.fold is not None and args.dataset is None:
        raise InputError("--fold selects rows of --dataset; a question CSV has no folds")
    output_csv = check_output_file(args.output_csv)

    # 1-3. Validate the inputs (before loading the model), encode (misconceptions cached), exact search
    questions, misconceptions = args.input_csv, args.misconceptions_csv
    if args.dataset:
        pairs, dataset_misconceptions = load_eedi_dataset(args.dataset)
        questions = dataset_rows(pairs, args.fold, args.dataset)
        misconceptions = misconceptions or dataset_misconceptions
    model_dir = [resolve_model_dir(m) for m in args.model]
    k = max(args.top_k, args.candidates_k, 100)
    candidates, settings, info = retrieve_candidates(
        model_dir,
        questions,
        misconceptions,
        k,
        batch_size=args.batch_size,
        use_faiss=args.use_faiss,
        embedding_cache=args.cache_dir,
        explanations=args.explanations,
        backend=args.backend,
    )
    labelled_input = candidates["MisconceptionId"].notna().to_numpy()
    ranked = np.stack([np.asarray(ids) for ids in candidates["candidate_ids"]])

    # 4. Submission, metrics when labelled, candidates when asked
    submission = submission_frame(candidates["QuestionId_Answer"].tolist(), ranked, args.top_k)
    with atomic_path(output_csv) as tmp:
        submission.to_csv(tmp, index=False)
    print(
        f"Wrote {len(submission)} rows to {output_csv} "
        f"({info['queries_per_second']:.1f} queries/s encoded, backend {info['backend']})"
    )
    metrics: dict = {}
    if labelled_input.any():
        seen_ids = settings.seen_misconception_ids
        seen = set(seen_ids) if seen_ids is not None else None
        actual = candidates.loc[labelled_input, "MisconceptionId"].astype(int).tolist()
        metrics = retrieval_metrics(actual, ranked[labelled_input], seen)
        metrics |= {
            "unlabelled_rows": int((~labelled_input).sum()),
            "misconception_embeddings_cached": info["embeddings_cached"],
        }
        write_json(output_csv.with_name(output_csv.stem + "_metrics.json"), metrics)
        line = f"MAP@25 {metrics['map@25']:.4f}, recall@25 {metrics['recall@25']:.4f} on {len(actual)} rows"
        if seen is not None:
            line += (
                f"; seen {metrics['seen_map@25']:.4f}/{metrics['seen_recall@25']:.4f} "
                f"({metrics['seen_rows']} rows), unseen {metrics['unseen_map@25']:.4f}/"
                f"{metrics['unseen_recall@25']:.4f} ({metrics['unseen_rows']} rows)"
            )
        print(line)
        plots_dir = prediction_plots_dir(output_csv)
        plot_eedi(metrics, actual, {"retriever": ranked[labelled_input]}, plots_dir, seen)
        print(f"Plots in {plots_dir}")
    if args.candidates_out:
        top = candidates.copy()
        for column in ("candidate_ids", "candidate_scores", "candidate_names"):
            top[column] = [row[: args.candidates_k] for row in top[column]]
        save_candidates(top, args.candidates_out, retriever=settings)
        print(f"Saved {len(top)} rows x {args.candidates_k} candidates to {args.candidates_out}")
    return metrics


if __name__ == "__main__":
    main()
