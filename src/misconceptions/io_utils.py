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
"""Atomic writes: outputs appear under their final name only when complete, so a crash leaves nothing half-written.

An output is written to a hidden temporary name beside it (`.NAME.tmp-PID-XXXX`) and renamed into place; a folder
that already exists is swapped with the new one in one step (`renameat2(RENAME_EXCHANGE)`), so a process killed at
any moment leaves either the previous complete output or the new complete one. Temporaries left by a killed process
are removed by the next write of the same output. A write that fails (no space, a read-only folder) raises
`OutputError` naming the output, and leaves no temporary behind.

Append-only JSONL files (`append_jsonl`, `read_jsonl`) are the other way outputs survive a kill: one record per line,
flushed at once, a partial last line dropped when read back; generations and explanations are kept in them.
"""

import contextlib
import ctypes
import errno
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import OutputError


logger = logging.getLogger(__name__)

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100
_STALE = re.compile(r"\.(?:tmp|old)-(\d+)-")
# What a failed write looks like: no space or quota, a read-only filesystem, no permission, a file-size limit, I/O.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO}


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux renameat2); False where the system or filesystem cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries(final_path: Path) -> None:
    """Delete `.NAME.tmp-PID-*` / `.NAME.old-PID-*` beside `final_path` whose process is gone (killed mid-write)."""
    if not final_path.parent.is_dir():
        return
    prefix = f".{final_path.name}."
    for sibling in final_path.parent.iterdir():
        if not sibling.name.startswith(prefix):
            continue
        match = _STALE.match(sibling.name[len(prefix) - 1 :])
        if match is not None and not _pid_alive(int(match.group(1))):
            _remove(sibling)


def _write_error(final_path: Path, err: OSError) -> OutputError:
    reason = err.strerror or str(err)
    return OutputError(f"could not write {final_path}: {reason} (errno {err.errno}); nothing was written there")


@contextlib.contextmanager
def atomic_path(final_path: str | os.PathLike, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `final_path`; move it into place on success, delete it on failure.

    A failed write (an OSError in WRITE_ERRNOS: no space, read-only, permission) becomes `OutputError` naming `final_path`.
    """
    final_path = Path(final_path)
    prefix = f".{final_path.name}.tmp-{os.getpid()}-"
    try:
        final_path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(final_path)
        if is_dir:
            tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=final_path.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=prefix, dir=final_path.parent)
            os.close(fd)
            tmp = Path(name)
    except OSError as err:
        if err.errno in WRITE_ERRNOS:
            raise _write_error(final_path, err) from err
        raise
    try:
        yield tmp
        if tmp.exists():  # mkstemp/mkdtemp create 0600/0700; give the output the umask's usual permissions
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod((0o777 if tmp.is_dir() else 0o666) & ~umask)
        if is_dir and final_path.is_dir() and not final_path.is_symlink():
            if _exchange(tmp, final_path):  # tmp now holds the previous output
                _remove(tmp)
                return
            old = final_path.with_name(f".{final_path.name}.old-{os.getpid()}-{os.urandom(4).hex()}")
            os.replace(final_path, old)
            os.replace(tmp, final_path)
            _remove(old)
            return
        os.replace(tmp, final_path)
    except OSError as err:
        _remove(tmp)
        if err.errno in WRITE_ERRNOS:
            raise _write_error(final_path, err) from err
        raise
    except BaseException:
        _remove(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def read_jsonl(path: str | os.PathLike, repair: bool = False) -> list[dict]:
    """Records of a JSONL file written by `append_jsonl`. A partial last line (a run killed mid-write) is dropped,
    and with `repair` cut off the file, so the next append starts on a clean line."""
    path = Path(path)
    if not path.is_file():
        return []
    records, good_bytes = [], 0
    with path.open("rb") as handle:
        for line in handle:
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("unterminated line")
                records.append(json.loads(line))
            except ValueError:
                logger.warning("%s: dropping a partial last line (a killed run); its work is done again", path)
                break
            good_bytes += len(line)
    if repair and good_bytes < path.stat().st_size:
        with path.open("r+b") as handle:
            handle.truncate(good_bytes)
    return records


def append_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    """Append records as lines in one write, flushed to disk before returning."""
    with Path(path).open("a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        handle.flush()
        os.fsync(handle.fileno())
