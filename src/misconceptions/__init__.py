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
"""misconceptions: learn to name the misconception behind a student's math answer.

Names are imported on first use (PEP 562), so `import misconceptions.synthetic` does not pull in the training stack
(the vLLM environment has its own transformers) and scripts start faster.
"""

import importlib
from typing import Any


_EXPORTS = {
    "ClassifierSettings": "settings",
    "RerankerSettings": "settings",
    "RetrieverSettings": "settings",
    "finalize_run": "training",
    "CLASSIFIER_META": "classifier",
    "Classifier": "classifier",
    "ClassifierConfig": "configs",
    "EEDI_INSTRUCTION": "configs",
    "EEDI_QUERY_PROMPT": "configs",
    "InputError": "errors",
    "OutputError": "errors",
    "LabelRanker": "classifier",
    "MAP_PROMPT_TEMPLATE": "data",
    "MisconceptionRetrievalEvaluator": "retrieval_training",
    "PipelineConfig": "pipeline",
    "RetrieverTrainer": "retrieval_training",
    "RETRIEVER_META": "retrieval",
    "RerankerConfig": "configs",
    "RetrieverConfig": "configs",
    "ScriptArguments": "configs",
    "WeightedLossTrainer": "classifier",
    "atomic_path": "io_utils",
    "average_precision_at_k": "metrics",
    "build_classifier_model": "classifier",
    "build_eedi_dataset": "eedi",
    "build_map_dataset": "data",
    "build_retriever": "retrieval_training",
    "class_weights": "classifier",
    "cli_entry": "errors",
    "finalize_classifier": "classifier",
    "finalize_retriever": "retrieval_training",
    "format_query": "eedi",
    "label_prefix": "classifier",
    "label_suffix": "classifier",
    "learn_question_table": "classifier",
    "load_classifier": "classifier",
    "load_dataset_any": "data",
    "load_eedi_dataset": "eedi",
    "load_retriever": "retrieval",
    "make_evaluator": "retrieval_training",
    "make_training_pairs": "retrieval_training",
    "map3_compute_metrics": "classifier",
    "map_at_k": "metrics",
    "map_at_k_from_scores": "metrics",
    "map_frame": "data",
    "pivot_wrong_answers": "eedi",
    "predict_probs": "classifier",
    "query_texts": "eedi",
    "rank_dataframe": "classifier",
    "read_csv_checked": "data",
    "read_map_csv": "data",
    "read_misconceptions_csv": "eedi",
    "read_questions_csv": "eedi",
    "recall_at_k": "metrics",
    "resolve_checkpoint": "training",
    "resolve_model_path": "model_utils",
    "retrieval_metrics": "retrieval",
    "search": "retrieval",
    "setup_logging": "training",
    "split_fold": "retrieval",
    "stratified_split": "data",
    "teacher_log_probs": "distillation",
    "texts_for": "classifier",
    "write_json": "io_utils",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'misconceptions' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
