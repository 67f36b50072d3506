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
"""misconceptions: learn to name the misconception behind a student's math answer."""

from .classifier import (
    CLASSIFIER_META,
    Classifier,
    LabelRanker,
    WeightedLossTrainer,
    build_classifier_model,
    class_weights,
    finalize_classifier,
    label_prefix,
    label_suffix,
    learn_question_table,
    load_classifier,
    map3_compute_metrics,
    predict_probs,
    rank_dataframe,
    texts_for,
)
from .configs import ClassifierConfig, RerankerConfig, RetrieverConfig, ScriptArguments, parse_config
from .data import (
    MAP_PROMPT_TEMPLATE,
    build_map_dataset,
    load_dataset_any,
    map_frame,
    read_csv_checked,
    read_map_csv,
    stratified_split,
)
from .eedi import (
    EEDI_INSTRUCTION,
    EEDI_QUERY_PROMPT,
    build_eedi_dataset,
    format_query,
    load_eedi_dataset,
    pivot_wrong_answers,
    query_texts,
    read_misconceptions_csv,
    read_questions_csv,
)
from .errors import InputError, cli_entry
from .io_utils import atomic_path, write_json
from .metrics import average_precision_at_k, map_at_k, map_at_k_from_scores, recall_at_k
from .model_utils import resolve_model_path
from .retrieval import (
    RETRIEVER_META,
    MisconceptionRetrievalEvaluator,
    build_retriever,
    finalize_retriever,
    load_retriever,
    make_evaluator,
    make_training_pairs,
    retrieval_metrics,
    search,
    split_fold,
)
from .training import resolve_checkpoint, setup_logging


__all__ = [
    "CLASSIFIER_META",
    "EEDI_INSTRUCTION",
    "EEDI_QUERY_PROMPT",
    "MAP_PROMPT_TEMPLATE",
    "RETRIEVER_META",
    "Classifier",
    "ClassifierConfig",
    "InputError",
    "LabelRanker",
    "MisconceptionRetrievalEvaluator",
    "RerankerConfig",
    "RetrieverConfig",
    "ScriptArguments",
    "WeightedLossTrainer",
    "atomic_path",
    "average_precision_at_k",
    "build_classifier_model",
    "build_eedi_dataset",
    "build_map_dataset",
    "build_retriever",
    "class_weights",
    "cli_entry",
    "finalize_classifier",
    "finalize_retriever",
    "format_query",
    "label_prefix",
    "label_suffix",
    "learn_question_table",
    "load_classifier",
    "load_dataset_any",
    "load_eedi_dataset",
    "load_retriever",
    "make_evaluator",
    "make_training_pairs",
    "map3_compute_metrics",
    "map_at_k",
    "map_at_k_from_scores",
    "map_frame",
    "parse_config",
    "pivot_wrong_answers",
    "predict_probs",
    "query_texts",
    "rank_dataframe",
    "read_csv_checked",
    "read_map_csv",
    "read_misconceptions_csv",
    "read_questions_csv",
    "recall_at_k",
    "resolve_checkpoint",
    "resolve_model_path",
    "retrieval_metrics",
    "search",
    "setup_logging",
    "split_fold",
    "stratified_split",
    "texts_for",
    "write_json",
]
