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
"""The whole Eedi inference pipeline in one command: retrieve candidates for every wrong answer, rerank them, write
the Kaggle submission (and with labelled input, MAP@25/recall@25 before and after reranking).

Usage:

    python scripts/predict_eedi.py --retriever data/eedi-minilm-cpu --reranker data/eedi-reranker-minilm-cpu \
        --input_csv ../shared/data/eedi/test.csv --misconceptions_csv ../shared/data/eedi/misconception_mapping.csv \
        --output_csv data/eedi_submission.csv [--candidates_k 100] [--window 20 --stride 10] \
        [--backend {auto,torch,onnx,onnx-int8}]

Fold models combine: `--retriever A B` scores each misconception by the retrievers' mean cosine similarity, and
`--reranker X Y` orders the reranked candidates by their mean position in the rerankers' lists.

--backend chooses how the retriever encodes (as in retrieve.py; auto: onnx-int8 on a CPU, torch on a GPU).
"""

import argparse

from misconceptions import InputError, cli_entry
from misconceptions.cli import add_backend_argument, check_output_file, setup_script_logging
from misconceptions.hub import resolve_model_dir
from misconceptions.rerank import add_rerank_arguments, check_rerank_arguments, rerank_and_write
from misconceptions.retrieval import retrieve_candidates


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--retriever",
        required=True,
        nargs="+",
        help="folder written by train_retriever.py, or a Hub model id; several (one per fold) combine by mean cosine",
    )
    parser.add_argument(
        "--reranker",
        required=True,
        nargs="+",
        help="folder written by train_reranker.py, or a Hub model id; several (one per fold) combine by mean rank",
    )
    parser.add_argument("--input_csv", required=True, help="Eedi questions, test.csv layout (train.csv adds scoring)")
    parser.add_argument("--misconceptions_csv", required=True, help="misconception_mapping.csv (id, name)")
    parser.add_argument("--output_csv", required=True, help="where the submission CSV is written")
    parser.add_argument("--candidates_k", type=int, default=100, help="candidates retrieved per row (default 100)")
    parser.add_argument(
        "--explanations", default=None, help="scripts/explain.py folder: add <LLMOutput> to the queries"
    )
    add_backend_argument(parser, "retriever")
    add_rerank_arguments(parser)
    return parser.parse_args(argv)


@cli_entry
def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_script_logging()
    check_rerank_arguments(args)
    if args.candidates_k < 25:
        raise InputError(f"--candidates_k must be at least 25 (the submission's length), got {args.candidates_k}")
    output_csv = check_output_file(args.output_csv)
    reranker_dirs = [resolve_model_dir(r) for r in args.reranker]  # a wrong reranker fails before the retrieval work
    candidates, _, info = retrieve_candidates(
        [resolve_model_dir(r) for r in args.retriever],
        args.input_csv,
        args.misconceptions_csv,
        args.candidates_k,
        explanations=args.explanations,
        backend=args.backend,
    )
    print(f"Retrieved {args.candidates_k} candidates for {len(candidates)} rows ({info['queries_per_second']:.1f}/s)")
    return rerank_and_write(reranker_dirs, candidates, args, output_csv)


if __name__ == "__main__":
    main()
