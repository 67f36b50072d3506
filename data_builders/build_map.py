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
"""Build the MAP dataset: validated rows, `label` (Category:Misconception, a ClassLabel), the MAP reference
solution's prompt (README, "Where the recipes come from"), and a stratified train/validation split (single-member
classes go to train). Saved with `save_to_disk`; each split is also written as `<split>.csv` in the competition
layout, for `scripts/predict_classifier.py --input_csv`.

Usage:

    python data_builders/build_map.py --train_csv ../shared/data/map/train.csv \
        --test_csv ../shared/data/map/test.csv --output_dir data/map [--push_to_hub ORG/map-misconceptions]
"""

import argparse
import logging

from misconceptions import atomic_path, build_map_dataset, cli_entry
from misconceptions.cli import new_output_dir, setup_script_logging
from misconceptions.hub import add_push_arguments, dataset_card, launch_command, push_built_dataset


logger = logging.getLogger(__name__)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--train_csv", required=True, help="MAP train.csv (row_id, QuestionId, ..., Category, Misconception)"
    )
    parser.add_argument("--test_csv", default=None, help="optional MAP test.csv, kept as an unlabelled 'test' split")
    parser.add_argument("--output_dir", required=True, help="where the DatasetDict is saved (must not exist yet)")
    parser.add_argument("--validation_size", type=float, default=0.2, help="share of rows held out (default 0.2)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the stratified split (default 42)")
    add_push_arguments(parser, "ORG/map-misconceptions")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output_dir")
    return parser.parse_args(argv)


@cli_entry
def main(argv=None) -> None:
    args = parse_args(argv)
    setup_script_logging()
    output_dir = new_output_dir(args.output_dir, args.overwrite)
    dataset = build_map_dataset(args.train_csv, args.test_csv, args.validation_size, args.seed)
    configs = {"default": dataset}
    card = dataset_card(
        configs,
        build_command=launch_command(__file__, argv),
        pretty_name="MAP: Charting Student Math Misunderstandings",
        description=(
            "Students' answers to multiple-choice math questions with their free-text explanations, labelled "
            "`Category:Misconception` (the `label` ClassLabel). The validation split is stratified by label; labels "
            f"with one row stay in train. Validation share {args.validation_size}, seed {args.seed}."
        ),
        source=(
            "Kaggle competition [MAP - Charting Student Math Misunderstandings]"
            f"(https://www.kaggle.com/competitions/map-charting-student-math-misunderstandings): `{args.train_csv}`"
            + (f" and `{args.test_csv}` (the unlabelled `test` split)" if args.test_csv else "")
        ),
        task_categories=["text-classification"],
    )
    with atomic_path(output_dir, is_dir=True) as tmp:
        dataset.save_to_disk(str(tmp))
        for name, split in dataset.items():
            split.remove_columns([c for c in ("label", "prompt") if c in split.column_names]).to_csv(
                str(tmp / f"{name}.csv"), index=False
            )
        card.save(str(tmp / "README.md"))
    print(f"Saved {dict(dataset.num_rows)} to {output_dir}")
    push_built_dataset(configs, card, output_dir, args)


if __name__ == "__main__":
    main()
