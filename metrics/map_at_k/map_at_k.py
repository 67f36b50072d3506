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
"""MAP@K: mean average precision at K with one relevant item per row (MAP and Eedi Kaggle competitions)."""

import datasets
import evaluate

from misconceptions.metrics import map_at_k


_DESCRIPTION = """
Mean Average Precision at K for ranking with a single relevant item per row, as scored by the Kaggle competitions
"MAP - Charting Student Math Misunderstandings" (K=3) and "Eedi - Mining Misconceptions in Mathematics" (K=25).
Each row scores 1/rank of the first correct prediction within the top K (0 if absent); repeated predictions count
once. The score is the mean over rows, between 0 and 1.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `str`): ranked predictions per row, best first.
    references (`list` of `str`): the one correct label per row.
    k (`int`, defaults to 3): how many predictions per row are scored.
Returns:
    map@k (`float`): the mean average precision at k, e.g. `map@3`.
Examples:
    >>> import evaluate
    >>> metric = evaluate.load("metrics/map_at_k")
    >>> metric.compute(predictions=[["a", "b", "c"], ["x", "b", "y"]], references=["a", "b"], k=3)
    {'map@3': 0.75}
"""

_CITATION = """
@misc{map-charting-student-math-misunderstandings,
    title = {MAP - Charting Student Math Misunderstandings},
    publisher = {Kaggle},
    year = {2025},
    url = {https://kaggle.com/competitions/map-charting-student-math-misunderstandings}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MapAtK(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Value("string"),
                }
            ),
            reference_urls=["https://www.kaggle.com/competitions/map-charting-student-math-misunderstandings"],
        )

    def _compute(self, predictions, references, k=3):
        return {f"map@{k}": map_at_k(references, predictions, k=k)}
