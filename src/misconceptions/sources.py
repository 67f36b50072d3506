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
"""Names that may be a local folder or a Hub id (datasets, models, candidates): how to tell them apart, and one
clear line when a name is neither.

`data/eedi` is both a relative folder and a valid `ORG/NAME` Hub id. A name is looked up as a folder first; if it is
not one, and it has the shape of a Hub id, the Hub (or its cache) is asked; if that fails too, `not_found` says what
was tried: the folder it looked for, and why the Hub did not have it (offline, not found, unreachable).
"""

import os
import re
from pathlib import Path

from .errors import InputError


def split_revision(name: str) -> tuple[str, str | None]:
    """`ORG/NAME@REV` -> (`ORG/NAME`, `REV`); a name without `@` (or a local path) -> (name, None)."""
    if "@" in name and not os.path.exists(name):
        repo_id, revision = name.rsplit("@", 1)
        return repo_id, revision or None
    return name, None


def is_hub_id(name: str) -> bool:
    """True for `NAME` or `ORG/NAME` that is not a local path (the Hub's repo id shape)."""
    return (
        not os.path.exists(name)
        and not name.startswith((".", "/", "~", "builtin:"))
        and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) is not None
    )


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE is set (read at call time: tests and users set it after import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_reason(err: BaseException | None) -> str:
    if hub_offline():
        return "offline: HF_HUB_OFFLINE is set and it is not in the local Hub cache"
    name = type(err).__name__ if err is not None else ""
    if "Gated" in name:
        return f"gated: accept its terms on the Hub and log in with a token that may read it ({name})"
    if "NotFound" in name or isinstance(err, FileNotFoundError):
        return f"not found there ({name})"
    if "Validation" in name:
        return f"not a valid Hub id ({name})"
    return f"the Hub could not be reached ({name})" if name else "not found there"


def not_found(kind: str, name: str, err: BaseException | None = None, expected: str = "") -> InputError:
    """The one-line error for a `kind` ("dataset", "model", "candidates") named `name` that is neither a folder here
    nor found on the Hub; `err` is what the Hub lookup raised (None when the name cannot be a Hub id)."""
    local = Path(name).expanduser().absolute()
    if local.exists() and not local.is_dir():
        where = f"{local} is a file, not a folder"
    else:
        where = f"{local} does not exist"
    repo_id = split_revision(name)[0]
    if is_hub_id(repo_id):
        hub_kind = "model" if "model" in kind else "dataset"
        message = (
            f"{kind} '{name}' is neither a folder here ({where}) nor a {hub_kind} on the Hub ({_hub_reason(err)})"
        )
    else:
        message = f"{kind} '{name}' not found: {where}, and it is not a Hub id (ORG/NAME)"
    return InputError(message + (f"; expected {expected}" if expected else ""))


# What the Hub and `datasets` raise when a repository cannot be had: offline, not found, unreachable, bad id.
def hub_lookup_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError

    return (OSError, HFValidationError, HfHubHTTPError)
