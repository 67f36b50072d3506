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
"""Rerank the retriever's candidates (scripts/retrieve.py --candidates_out) with a trained reranker and write the
Kaggle submission (QuestionId_Answer,MisconceptionId, 25 ids per row).

A listwise reranker reads the letter logits at the answer position in one forward pass per window (no sampling);
with more candidates than --window, windows slide from the back to the front by --stride so every candidate is
scored and the best climb to the top. A pointwise reranker scores every (query, candidate) pair. With labelled
candidates, MAP@25 and recall@25 before and after reranking go to <output stem>_metrics.json, seen and unseen
misconceptions apart, and their plots to <output stem>_plots/. Settings left unset come from the reranker's recipe
(saved with it).

Usage:

    python scripts/rerank.py --model data/eedi-reranker-minilm-cpu --candidates data/eedi-fold0-candidates \
        --output_csv data/eedi_fold0_reranked.csv [--window 20 --stride 10] [--rerank_top_k 25] [--blend_weight 0.5]
"""

import argparse
import logging

from misconceptions import cli_entry, read_misconceptions_csv
from misconceptions.candidates import read_candidates
from misconceptions.cli import check_output_file, setup_script_logging
from misconceptions.hub import resolve_model_dir
from misconceptions.rerank import add_rerank_arguments, check_rerank_arguments, rerank_and_write
from misconceptions.rerank_model import load_reranker


logger = logging.getLogger(__name__)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="folder written by train_reranker.py, or a Hub model id")
    parser.add_argument(
        "--candidates", required=True, help="folder (or Hub dataset) from retrieve.py --candidates_out"
    )
    parser.add_argument("--output_csv", required=True, help="where the submission CSV is written")
    parser.add_argument(
        "--misconceptions_csv", default=None, help="check candidate ids against this mapping and take names from it"
    )
    add_rerank_arguments(parser)
    return parser.parse_args(argv)


@cli_entry
def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_script_logging()
    check_rerank_arguments(args)
    output_csv = check_output_file(args.output_csv)
    names = None
    if args.misconceptions_csv:
        mapping = read_misconceptions_csv(args.misconceptions_csv)
        names = dict(zip(mapping["MisconceptionId"], mapping["MisconceptionName"], strict=True))
    candidates = read_candidates(args.candidates, names)
    reranker = load_reranker(resolve_model_dir(args.model))
    return rerank_and_write(reranker, candidates, args, output_csv)


if __name__ == "__main__":
    main()
