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
"""Predict ranked MAP labels and write the Kaggle submission (row_id,Category:Misconception, 3 labels per row).

With labelled input (Category and Misconception columns), MAP@K is also written to <output stem>_metrics.json, and
plots of AP@K per label and a confusion matrix of the most frequent labels to <output stem>_plots/.

Usage:

    python scripts/predict_classifier.py --model data/map-minilm-cpu --input_csv data/map/validation.csv \
        --output_csv data/submission.csv [--top_k 3] [--no-restrict_labels] [--no-derive_prefix] \
        [--backend {auto,torch,onnx,onnx-int8}]

--backend auto (the default) runs int8 ONNX Runtime on a CPU and torch on a GPU; the exported model is cached beside
the model (src/misconceptions/onnx_export.py).
"""

import argparse
import logging
import time

import pandas as pd

from misconceptions import atomic_path, cli_entry, load_classifier, map_at_k, rank_dataframe, read_map_csv, write_json
from misconceptions.cli import add_backend_argument, check_output_file, setup_script_logging
from misconceptions.hub import resolve_model_dir
from misconceptions.plots import plot_map, prediction_plots_dir


logger = logging.getLogger(__name__)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="folder written by train_classifier.py, or a Hub model id")
    parser.add_argument("--input_csv", required=True, help="MAP CSV (test layout; train layout adds scoring)")
    parser.add_argument("--output_csv", required=True, help="where the submission CSV is written")
    parser.add_argument("--top_k", type=int, default=3, help="labels per row (default 3, the competition's)")
    parser.add_argument("--batch_size", type=int, default=64, help="rows per forward pass (default 64)")
    add_backend_argument(parser, "classifier")
    parser.add_argument(
        "--restrict_labels",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rank labels seen for the question first (default: the model's saved setting)",
    )
    parser.add_argument(
        "--derive_prefix",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="take True_/False_ from whether the answer is correct (default: the model's setting)",
    )
    return parser.parse_args(argv)


@cli_entry
def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_script_logging()
    output_csv = check_output_file(args.output_csv)
    df = read_map_csv(args.input_csv, require_labels=False, allow_empty_explanation=True)
    classifier = load_classifier(resolve_model_dir(args.model), backend=args.backend)
    started = time.perf_counter()
    ranked = rank_dataframe(
        classifier,
        df,
        top_k=args.top_k,
        restrict_labels=args.restrict_labels,
        derive_prefix=args.derive_prefix,
        batch_size=args.batch_size,
    )
    seconds = time.perf_counter() - started
    logger.info(
        "Ranked %d rows in %.1f s (%.0f rows/s, backend %s)", len(df), seconds, len(df) / seconds, classifier.backend
    )
    submission = pd.DataFrame({"row_id": df["row_id"], "Category:Misconception": [" ".join(r) for r in ranked]})
    metrics = {}
    if "label" in df.columns:
        unseen = ~df["label"].isin(classifier.settings.labels)
        if unseen.any():
            logger.warning(
                "%d rows have labels the model never saw (e.g. %s); they score 0",
                int(unseen.sum()),
                sorted(df.loc[unseen, "label"].unique())[:3],
            )
        metrics = {
            f"map@{args.top_k}": map_at_k(df["label"].tolist(), ranked, k=args.top_k),
            "rows": len(df),
            "rows_with_unseen_labels": int(unseen.sum()),
        }
    with atomic_path(output_csv) as tmp:
        submission.to_csv(tmp, index=False)
    print(f"Wrote {len(submission)} rows to {output_csv}")
    if metrics:
        write_json(output_csv.with_name(output_csv.stem + "_metrics.json"), metrics)
        print(f"MAP@{args.top_k}: {metrics[f'map@{args.top_k}']:.4f} on {len(df)} rows")
        plots_dir = prediction_plots_dir(output_csv)
        plot_map(df["label"].tolist(), ranked, plots_dir, k=args.top_k)
        print(f"Plots in {plots_dir}")
    return metrics


if __name__ == "__main__":
    main()
