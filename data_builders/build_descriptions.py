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
"""Build the Eedi description rows: one labelled pair per misconception whose query is its own description (no
question, answers, construct or subject), in the Eedi pairs schema with `source` = description and fold -1
(training only). By default only the misconceptions that have no real row in the training folds of `--dataset`
(every fold but `--fold`): the descriptions as training signal for the misconceptions the retriever never sees,
without a generator. The held-out fold's labels are not read.

Mix it into the retriever's training with the recipe key `extra_datasets` (a list of `{path, weight}` mappings);
the rows have no saved candidates, so a second round mines their hard negatives with the model itself.

Usage:

    python data_builders/build_descriptions.py --dataset data/eedi --fold 0 --output_dir data/eedi-descriptions \
        [--all_misconceptions] [--push_to_hub ORG/eedi-descriptions]
"""

import argparse
import logging

from misconceptions import InputError, atomic_path, cli_entry, load_eedi_dataset, split_fold
from misconceptions.cli import new_output_dir, setup_script_logging
from misconceptions.eedi import eedi_hub_configs, seen_misconception_ids
from misconceptions.hub import add_push_arguments, dataset_card, launch_command, push_built_dataset
from misconceptions.synthetic import description_pairs, pairs_dataset


logger = logging.getLogger(__name__)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a folder written by build_eedi.py (or its Hub id)")
    parser.add_argument(
        "--fold",
        type=int,
        default=0,
        help="the held-out fold: misconceptions with real rows in the other folds are skipped (-1: in any fold)",
    )
    parser.add_argument(
        "--all_misconceptions", action="store_true", help="a row for every misconception, seen in training or not"
    )
    parser.add_argument("--split", default="train", help="the labelled split of --dataset (default: train)")
    parser.add_argument("--output_dir", required=True, help="where the DatasetDict is saved (must not exist yet)")
    add_push_arguments(parser, "ORG/eedi-descriptions")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output_dir")
    return parser.parse_args(argv)


@cli_entry
def main(argv=None) -> None:
    args = parse_args(argv)
    setup_script_logging()
    output_dir = new_output_dir(args.output_dir, args.overwrite)
    pairs, misconceptions = load_eedi_dataset(args.dataset)
    if args.split not in pairs:
        raise InputError(f"{args.dataset}: no '{args.split}' split (has {list(pairs)})")
    frame = pairs[args.split].to_pandas()
    try:
        train_rows, _ = split_fold(frame, args.fold)
    except InputError as err:
        raise InputError(f"{args.dataset}: {err}") from None
    skip = set() if args.all_misconceptions else set(seen_misconception_ids(train_rows))
    dataset = pairs_dataset(description_pairs(misconceptions, skip), misconceptions, source="description")
    configs = eedi_hub_configs(dataset)
    which = (
        "every misconception" if args.all_misconceptions else f"misconceptions without rows outside fold {args.fold}"
    )
    card = dataset_card(
        configs,
        build_command=launch_command(__file__, argv),
        pretty_name="Eedi misconceptions: descriptions as queries",
        description=(
            f"One training pair per misconception ({which}) whose query is the misconception's own description, "
            "in the Eedi pairs schema (`source` = description, `fold` = -1: training only), for `extra_datasets`."
        ),
        source=f"The misconceptions of `{args.dataset}`",
        license_note="The misconception names come from the Eedi competition data (check its rules).",
        task_categories=["text-retrieval"],
    )
    with atomic_path(output_dir, is_dir=True) as tmp:
        dataset.save_to_disk(str(tmp))
        misconceptions.to_csv(tmp / "misconception_mapping.csv", index=False)
        card.save(str(tmp / "README.md"))
    print(
        f"Saved {dataset['train'].num_rows} description rows ({which}; {len(skip)} skipped) "
        f"of {len(misconceptions)} misconceptions to {output_dir}"
    )
    push_built_dataset(configs, card, output_dir, args)


if __name__ == "__main__":
    main()
