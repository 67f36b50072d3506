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
"""Explain each wrong answer with an LLM: one or two sentences on the mistake behind it, the Eedi reference solution's <LLMOutput>.

Every (question, wrong answer) of the input CSV gets an explanation, cached in <output_dir>/explanations.jsonl by a
hash of the texts it is made from: a rerun (or another CSV with the same questions) only explains what is new, and
a killed run keeps what it wrote. `build_eedi.py --explanations DIR` and `retrieve.py --explanations DIR` put them
into the queries. Settings are those of generate_synthetic.py (backend, model, sampling); here greedy (temperature
0) and at most 96 new tokens unless set.

Usage:

    python scripts/explain.py --input_csv ../shared/data/eedi/train.csv --output_dir data/eedi-explanations \
        [--config recipes/eedi/synthetic-smollm2-cpu.yaml] [--temperature 0] [--max_new_tokens 96]
"""

import logging
from dataclasses import dataclass, field

from misconceptions import InputError, cli_entry, pivot_wrong_answers, read_questions_csv
from misconceptions.cli import setup_script_logging
from misconceptions.explanations import explain_rows
from misconceptions.generation import load_backend, parse_settings


logger = logging.getLogger(__name__)


@dataclass
class ExplainArguments:
    input_csv: str | None = field(default=None, metadata={"help": "Eedi questions (train.csv or test.csv layout)."})
    max_rows: int | None = field(default=None, metadata={"help": "Explain only the first N wrong answers."})


@cli_entry
def main(argv=None) -> dict:
    settings, args = parse_settings(
        argv, description=__doc__, extra_types=(ExplainArguments,), defaults={"temperature": 0.0, "max_new_tokens": 96}
    )
    setup_script_logging()
    if not args.input_csv or not settings.output_dir:
        raise InputError("--input_csv and --output_dir are required")
    pairs = pivot_wrong_answers(read_questions_csv(args.input_csv))
    if args.max_rows:
        pairs = pairs.head(args.max_rows)
    if pairs.empty:
        raise InputError(f"{args.input_csv}: no wrong answers to explain")
    backend = load_backend(settings)
    counts = explain_rows(backend, pairs, settings.output_dir, settings.batch_size)
    print(
        f"{counts['written']} explanations written, {counts['cached']} already cached, for {counts['rows']} rows "
        f"({counts['distinct']} distinct) in {settings.output_dir}"
    )
    return counts


if __name__ == "__main__":
    main()
