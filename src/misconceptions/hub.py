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
"""Hub round trips: push datasets (with a card) and download models or datasets by id, the same as local paths."""

import logging

from datasets import DatasetDict


logger = logging.getLogger(__name__)


def push_dataset(dataset: DatasetDict, repo_id: str, private: bool = True, source: str = "") -> str:
    """Push every split of `dataset` to `repo_id` (private by default); errors propagate, never swallowed."""
    logger.info("Pushing %s to the Hub as %s (private=%s)", dict(dataset.num_rows), repo_id, private)
    dataset.push_to_hub(repo_id, private=private, commit_message=f"Build dataset. {source}".strip())
    return repo_id


def resolve_model_dir(name_or_path: str) -> str:
    """A local folder as is; otherwise a Hub model id, downloaded (or taken from the cache) with snapshot_download."""
    import os

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    from .errors import InputError

    if os.path.isdir(name_or_path):
        return name_or_path
    try:
        return snapshot_download(repo_id=name_or_path)
    except (HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError) as err:
        raise InputError(
            f"{name_or_path}: not a local folder, and not a Hub model that could be downloaded ({type(err).__name__})"
        ) from None
