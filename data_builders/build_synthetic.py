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
"""Build the synthetic Eedi dataset from scripts/generate_synthetic.py's generations: one labelled row per synthetic
question (its misconception on the wrong answer it was written for) in the Eedi pairs schema, with `source` =
synthetic and fold -1 (training only). Saved with `save_to_disk` (splits `train` and `misconceptions`, so it loads
like build_eedi.py's output); beside it, `synthetic.csv` holds the questions in the competition's wide layout (for
`retrieve.py --input_csv ... --candidates_out`, the reranker's `extra_candidates`).

Mix it into training with the recipe keys `extra_datasets` (train_retriever.py) or `extra_candidates`
(train_reranker.py), lists of `{path, weight}` mappings.

Usage:

    python data_builders/build_synthetic.py --generations data/eedi-synthetic-smollm2-cpu \
        --misconceptions_csv ../shared/data/eedi/misconception_mapping.csv --output_dir data/eedi-synthetic \
        [--push_to_hub ORG/eedi-synthetic]
"""

import argparse
import logging

import pandas as pd

from misconceptions import InputError, atomic_path, cli_entry, read_misconceptions_csv
from misconceptions.cli import new_output_dir, setup_script_logging
from misconceptions.eedi import eedi_hub_configs, write_wide_csv
from misconceptions.hub import add_push_arguments, dataset_card, launch_command, push_built_dataset
from misconceptions.synthetic import read_generations, synthetic_dataset, synthetic_questions


logger = logging.getLogger(__name__)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--generations", required=True, nargs="+", help="generate_synthetic.py output folder(s) (generations.jsonl)"
    )
    parser.add_argument("--misconceptions_csv", required=True, help="misconception_mapping.csv (id, name)")
    parser.add_argument("--output_dir", required=True, help="where the DatasetDict is saved (must not exist yet)")
    add_push_arguments(parser, "ORG/eedi-synthetic")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output_dir")
    return parser.parse_args(argv)


@cli_entry
def main(argv=None) -> None:
    args = parse_args(argv)
    setup_script_logging()
    output_dir = new_output_dir(args.output_dir, args.overwrite)
    misconceptions = read_misconceptions_csv(args.misconceptions_csv)
    records = [record for folder in args.generations for record in read_generations(folder)]
    unknown = sorted({int(r["MisconceptionId"]) for r in records} - set(misconceptions["MisconceptionId"]))
    if unknown:
        raise InputError(f"generations name misconception ids {unknown[:5]} that {args.misconceptions_csv} lacks")
    questions = synthetic_questions(records)
    dataset = synthetic_dataset(questions, misconceptions)
    configs = eedi_hub_configs(dataset)
    card = dataset_card(
        configs,
        build_command=launch_command(__file__, argv),
        pretty_name="Eedi misconceptions: synthetic questions",
        description=(
            "Multiple-choice questions written by an LLM (scripts/generate_synthetic.py) for misconceptions with "
            "little or no training data, in the Eedi pairs schema (`source` = synthetic, `fold` = -1: training "
            "only). Each row was validated (JSON fields, four distinct options, correct != wrong) and deduplicated."
        ),
        source=f"Generations in {', '.join(f'`{g}`' for g in args.generations)}; names from `{args.misconceptions_csv}`",
        license_note="Generated text; the misconception names come from the Eedi competition data (check its rules).",
        task_categories=["text-retrieval"],
    )
    with atomic_path(output_dir, is_dir=True) as tmp:
        dataset.save_to_disk(str(tmp))
        write_wide_csv(questions, tmp / "synthetic.csv")
        misconceptions.to_csv(tmp / "misconception_mapping.csv", index=False)
        card.save(str(tmp / "README.md"))
    covered = pd.Series([int(r["MisconceptionId"]) for r in records if r["questions"]]).nunique()
    print(
        f"Saved {dataset['train'].num_rows} synthetic rows for {covered} misconceptions "
        f"(from {len(records)} generated for) to {output_dir}"
    )
    push_built_dataset(configs, card, output_dir, args)


if __name__ == "__main__":
    main()
