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
"""Errors for bad user input, and the CLI wrapper that turns them into a clean message and exit code."""

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any


logger = logging.getLogger(__name__)


class InputError(ValueError):
    """Bad user input: a wrong path, a missing column, an unknown label. The message names the file, row or key."""


class OutputError(RuntimeError):
    """An output could not be written (no space, a read-only folder); the message names the path. Nothing
    half-written is left there (io_utils.atomic_path)."""


class HubPushError(RuntimeError):
    """A push to the Hub failed; the local output is complete and can be pushed again."""


def cli_entry(main: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a script's entry point: bad input prints one clear line and exits with status 2; a failed write or push
    prints one line and exits with status 1 (no traceback)."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except (InputError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)  # noqa: T201
            sys.exit(2)
        except (HubPushError, OutputError) as err:
            print(f"error: {err}", file=sys.stderr)  # noqa: T201
            sys.exit(1)

    return wrapper
