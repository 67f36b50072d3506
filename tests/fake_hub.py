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
"""A stand-in for the Hub at the `huggingface_hub.HfApi` boundary (the Hub cannot be reached here).

`fake_methods()` gives replacements for `HfApi.create_repo`, `create_branch` and `upload_folder`. Each call is appended to a JSON-lines
record; an upload keeps exactly the files the real `upload_folder` would send (huggingface_hub's own
`filter_repo_objects` applies the patterns) and lays them out as a snapshot in an HF cache folder, so that
`snapshot_download(repo_id, revision=...)` with HF_HUB_OFFLINE=1 finds them: a real download-side round trip.
With `fail=True` the upload raises the error a refused request gives.

Run a script under it: `python -m tests.fake_hub RECORD CACHE scripts/x.py ARGS...` (FAKE_HUB_FAIL=1 to fail).
"""

import hashlib
import json
import os
import runpy
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace


def _repo_folder(cache: Path, repo_type: str, repo_id: str) -> Path:
    return cache / f"{repo_type}s--{repo_id.replace('/', '--')}"


def fake_methods(record: str | os.PathLike, cache: str | os.PathLike, fail: bool = False) -> dict:
    """HfApi methods that record pushes in `record` and lay them out in the cache folder `cache`."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import filter_repo_objects

    record, cache = Path(record), Path(cache)

    def log(entry: dict) -> None:
        with record.open("a") as f:
            f.write(json.dumps(entry) + "\n")

    def create_repo(self, repo_id, *, private=None, repo_type=None, exist_ok=False, **kwargs):
        log({"call": "create_repo", "repo_id": repo_id, "private": private, "repo_type": repo_type or "model"})
        return SimpleNamespace(repo_id=repo_id, url=f"https://huggingface.co/{repo_id}")

    def create_branch(self, repo_id, *, branch, repo_type=None, exist_ok=False, **kwargs):
        log({"call": "create_branch", "repo_id": repo_id, "branch": branch, "repo_type": repo_type or "model"})

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, revision=None, commit_message=None, **kwargs):
        repo_type = repo_type or "model"
        root = Path(folder_path)
        every = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        files = list(
            filter_repo_objects(
                every, allow_patterns=kwargs.get("allow_patterns"), ignore_patterns=kwargs.get("ignore_patterns")
            )
        )
        log(
            {
                "call": "upload_folder",
                "repo_id": repo_id,
                "repo_type": repo_type,
                "revision": revision,
                "commit_message": commit_message,
                "files": files,
                "readme": (root / "README.md").read_text() if "README.md" in files else None,
            }
        )
        if fail:
            request = httpx2.Request("POST", f"https://huggingface.co/api/{repo_type}s/{repo_id}/commit/main")
            raise HfHubHTTPError("403 Forbidden: no write access", response=httpx2.Response(403, request=request))
        digest = hashlib.sha1()
        for name in files:
            digest.update(name.encode() + (root / name).read_bytes())
        sha = digest.hexdigest()
        repo = _repo_folder(cache, repo_type, repo_id)
        for name in files:
            target = repo / "snapshots" / sha / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / name, target)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / (revision or "main")).write_text(sha)
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/{sha}", oid=sha)

    return {"create_repo": create_repo, "create_branch": create_branch, "upload_folder": upload_folder}


def install(record: str | os.PathLike, cache: str | os.PathLike, fail: bool = False) -> None:
    """Patch HfApi for the whole process (a script run under `python -m tests.fake_hub`)."""
    from huggingface_hub import HfApi

    for name, method in fake_methods(record, cache, fail).items():
        setattr(HfApi, name, method)


def read_record(record: str | os.PathLike) -> list[dict]:
    path = Path(record)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


if __name__ == "__main__":
    record_path, cache_path, script, *args = sys.argv[1:]
    install(record_path, cache_path, fail=os.environ.get("FAKE_HUB_FAIL") == "1")
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")
