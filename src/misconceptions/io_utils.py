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
"""Atomic writes: outputs appear under their final name only when complete, so a crash leaves nothing half-written."""

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(final_path: str | os.PathLike, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `final_path`; rename it into place on success, delete it on failure."""
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{final_path.name}.tmp-"
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=final_path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=final_path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if tmp.exists():  # mkstemp/mkdtemp create 0600/0700; give the output the umask's usual permissions
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod((0o777 if tmp.is_dir() else 0o666) & ~umask)
        if is_dir and final_path.exists():
            shutil.rmtree(final_path)
        os.replace(tmp, final_path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")
