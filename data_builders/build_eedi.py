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
"""Build the Eedi retrieval dataset: validated CSVs pivoted to one row per (question, wrong answer), with the
correct and wrong answer texts, construct, subject, the misconception id (an int) and name, and a grouped `fold`
column. The query text of the Eedi reference solution (README, "Where the recipes come from") is not stored: the
scripts format it from these columns where they use it, with a recipe's `query_template` if any. Splits: `train`
(labelled rows, every fold), `unlabelled` (wrong answers without a misconception: inference only, never positives),
`misconceptions` (id, name). Saved with `save_to_disk`; on the Hub the misconceptions are the config `misconceptions`.

Our own steps read the dataset itself (`scripts/retrieve.py --dataset data/eedi --fold 0`). Beside it,
`misconception_mapping.csv` is a copy of the mapping and `fold<k>.csv` holds each fold's questions in the
competition's wide layout: a held-out fold as users' data arrives (test.csv's layout, labels kept), for what takes a
question CSV only: scripts/predict_eedi.py (retriever -> reranker scored end to end), the app, and the CSV-to-answer
timings of bench/inference_speed.py and bench/int8_variants.py.

Usage:

    python data_builders/build_eedi.py --train_csv ../shared/data/eedi/train.csv \
        --misconceptions_csv ../shared/data/eedi/misconception_mapping.csv --output_dir data/eedi \
        [--n_folds 2] [--fold_by QuestionId|ConstructId|SubjectId] [--seed 42] [--push_to_hub ORG/eedi-misconceptions] \
        [--explanations data/eedi-explanations]
"""

import argparse
import logging

from misconceptions import atomic_path, build_eedi_dataset, cli_entry
from misconceptions.cli import new_output_dir, setup_script_logging
from misconceptions.eedi import FOLD_BY, eedi_hub_configs, write_wide_csv
from misconceptions.hub import add_push_arguments, dataset_card, launch_command, push_built_dataset


logger = logging.getLogger(__name__)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_csv", required=True, help="Eedi train.csv (wide: one row per question)")
    parser.add_argument("--misconceptions_csv", required=True, help="misconception_mapping.csv (id, name)")
    parser.add_argument("--output_dir", required=True, help="where the DatasetDict is saved (must not exist yet)")
    parser.add_argument(
        "--n_folds", type=int, default=2, help="number of grouped folds (default 2, as in the Eedi reference solution)"
    )
    parser.add_argument(
        "--fold_by", default="QuestionId", choices=FOLD_BY, help="grouping column (default QuestionId)"
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of the fold assignment (default 42)")
    parser.add_argument(
        "--explanations",
        default=None,
        help="scripts/explain.py output folder: fills each query's <LLMOutput> (every wrong answer needs one)",
    )
    add_push_arguments(parser, "ORG/eedi-misconceptions")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output_dir")
    return parser.parse_args(argv)


@cli_entry
def main(argv=None) -> None:
    args = parse_args(argv)
    setup_script_logging()
    output_dir = new_output_dir(args.output_dir, args.overwrite)
    dataset, questions, misconceptions = build_eedi_dataset(
        args.train_csv, args.misconceptions_csv, args.n_folds, args.fold_by, args.seed, args.explanations
    )
    configs = eedi_hub_configs(dataset)
    card = dataset_card(
        configs,
        build_command=launch_command(__file__, argv),
        pretty_name="Eedi: Mining Misconceptions in Mathematics (pairs)",
        description=(
            "One row per (question, wrong answer) with the correct and wrong answer texts, construct, subject, the "
            f"misconception id and name, and a `fold` column ({args.n_folds} folds grouped by "
            f"{args.fold_by}, seed {args.seed}). `unlabelled` holds wrong answers without a misconception "
            "(inference only). The `misconceptions` config is the 2,587 misconception names."
        ),
        source=(
            "Kaggle competition [Eedi - Mining Misconceptions in Mathematics]"
            f"(https://www.kaggle.com/competitions/eedi-mining-misconceptions-in-mathematics): `{args.train_csv}` and "
            f"`{args.misconceptions_csv}`"
        ),
        task_categories=["text-retrieval"],
    )
    with atomic_path(output_dir, is_dir=True) as tmp:
        dataset.save_to_disk(str(tmp))
        for fold in sorted(questions["fold"].unique()):
            write_wide_csv(questions[questions["fold"] == fold], tmp / f"fold{fold}.csv")
        misconceptions.to_csv(tmp / "misconception_mapping.csv", index=False)
        card.save(str(tmp / "README.md"))
    print(f"Saved {dict(dataset.num_rows)} with {args.n_folds} folds by {args.fold_by} to {output_dir}")
    push_built_dataset(configs, card, output_dir, args)


if __name__ == "__main__":
    main()
