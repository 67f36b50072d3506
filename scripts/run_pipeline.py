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
"""A whole reference run in one resumable command: the steps of a pipeline recipe in order, finished steps skipped,
a killed step run again (training resumes from its last checkpoint), and each step's metrics in a table at the end.

Usage:

    python scripts/run_pipeline.py --config recipes/eedi/pipeline.yaml [--steps retriever1-fold0,candidates1-fold0]
        [--dry_run] [--override output_dir=data/eedi-run2] [--override 'step_args={train_retriever: [--seed, "7"]}']

Eedi (recipes/eedi/pipeline.yaml, the reference solution's run.sh): build the dataset with its folds, optional
synthetic questions, retriever round 1 per fold (exp010), its candidates for every row, round 2 on those hard
negatives (exp012), its candidates, the listwise reranker per fold (exp015), and the submission from the fold models
combined. MAP (recipes/map/pipeline.yaml): build, train, predict. Training steps run under `accelerate launch` with
the recipe's `accelerate_config`. `--dry_run` prints every command without running any; `--override KEY=VALUE` sets a
recipe key (VALUE read as YAML). The table is also written to <output_dir>/pipeline_summary.md.
"""

import argparse
from pathlib import Path

import yaml

from misconceptions import InputError, cli_entry
from misconceptions.cli import setup_script_logging
from misconceptions.io_utils import atomic_path
from misconceptions.pipeline import PipelineConfig, plan, run_steps, select_steps, summary_table


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config_file", nargs="?", help="the pipeline recipe (or --config)")
    parser.add_argument("--config", dest="config_flag", help="the pipeline recipe, recipes/<task>/pipeline.yaml")
    parser.add_argument("--steps", default=None, help="comma-separated step names to run (default: all)")
    parser.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    parser.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE", help="set a recipe key (VALUE is YAML)"
    )
    args = parser.parse_args(argv)
    args.config = args.config_flag or args.config_file
    if not args.config:
        parser.error("give the pipeline recipe: --config recipes/eedi/pipeline.yaml")
    return args


def parse_overrides(pairs: list[str]) -> dict:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--override {pair!r}: expected KEY=VALUE")
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise InputError(f"--override {pair!r}: the value is not valid YAML ({error})") from None
    return overrides


@cli_entry
def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    setup_script_logging()
    config = PipelineConfig.load(args.config, parse_overrides(args.override))
    steps = select_steps(plan(config), args.steps)
    results = run_steps(steps, dry_run=args.dry_run)
    table = summary_table(steps, results)
    print(table)
    if not args.dry_run:
        path = Path(config.output_dir) / "pipeline_summary.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(table + "\n")
    return results


if __name__ == "__main__":
    main()
