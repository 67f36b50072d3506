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
"""The pinned GPU environments in requirements/: the files parse and agree with setup.cfg (fast, offline), and
`requirements/resolve.py --check` resolves them afresh against PyPI (marked `pins`: network, about two minutes)."""

import configparser
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO / "requirements"
PIN_FILES = ("gpu.txt", "gpu-flash.txt", "vllm.txt")
PIN_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")
# The generation path's dependencies, installed next to vllm (the toolkit itself goes in with --no-deps).
GENERATION_DEPS = ("datasets", "scikit-learn", "gguf", "pandas", "pyyaml")


def read_pins(name: str) -> dict[str, str]:
    """{canonical name: version} of a pin file; every line a comment, blank, or `name==version`."""
    pins = {}
    for number, line in enumerate((REQUIREMENTS / name).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = PIN_LINE.match(line)
        assert match, f"requirements/{name}:{number} is not `name==version`: {line!r}"
        key = canonicalize_name(match.group(1))
        assert key not in pins, f"requirements/{name}:{number} pins {key} twice"
        pins[key] = match.group(2)
    assert pins, f"requirements/{name} pins nothing"
    return pins


def setup_cfg() -> tuple[list[Requirement], dict[str, list[Requirement]]]:
    """install_requires and extras_require of setup.cfg."""
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg", encoding="utf-8")

    def reqs(value: str) -> list[Requirement]:
        return [Requirement(line.strip()) for line in value.splitlines() if line.strip()]

    return reqs(parser.get("options", "install_requires")), {
        key: reqs(value) for key, value in parser.items("options.extras_require")
    }


def extra(extras: dict[str, list[Requirement]], name: str) -> list[Requirement]:
    """One extra of setup.cfg, which must exist."""
    assert extras.get(name), f"setup.cfg has no `{name}` extra in [options.extras_require]"
    return extras[name]


def assert_satisfied(pins: dict[str, str], requirements: list[Requirement], where: str) -> None:
    """Each requirement is pinned in `pins` at a version its specifier allows."""
    for req in requirements:
        name = canonicalize_name(req.name)
        assert name in pins, f"{where}: {req} is not pinned"
        assert req.specifier.contains(pins[name], prereleases=True), f"{where}: {req} but pinned {pins[name]}"


@pytest.mark.parametrize("name", PIN_FILES)
def test_pin_files_parse(name):
    read_pins(name)


def test_gpu_pins_agree_with_setup_cfg():
    gpu = read_pins("gpu.txt")
    install, extras = setup_cfg()
    assert gpu["torch"] == "2.14.1"
    for key in ("gptqmodel", "optimum", "deepspeed"):
        assert key in gpu, f"gpu.txt does not pin {key}"
    assert "misconceptions" not in gpu
    assert_satisfied(gpu, install, "gpu.txt vs setup.cfg install_requires")
    assert_satisfied(gpu, extra(extras, "gpu"), "gpu.txt vs the gpu extra")
    exact = {canonicalize_name(r.name) for r in extra(extras, "gpu") if str(r.specifier).startswith("==")}
    assert {"torch", "gptqmodel", "optimum", "deepspeed"} <= exact, "the gpu extra should pin each package with =="


def test_flash_pins_extend_gpu_pins():
    gpu, flash = read_pins("gpu.txt"), read_pins("gpu-flash.txt")
    _, extras = setup_cfg()
    assert {k: flash.get(k) for k in gpu} == gpu, "gpu-flash.txt must pin the gpu.txt closure unchanged"
    assert_satisfied(flash, extra(extras, "flash"), "gpu-flash.txt vs the flash extra")
    assert set(flash) - set(gpu) <= {"flash-attn", "wheel"}


def test_vllm_pins_agree_with_setup_cfg():
    vllm = read_pins("vllm.txt")
    install, extras = setup_cfg()
    assert_satisfied(vllm, extra(extras, "vllm"), "vllm.txt vs the vllm extra")
    generation = [r for r in install if canonicalize_name(r.name) in GENERATION_DEPS]
    assert len(generation) == len(GENERATION_DEPS)
    assert_satisfied(vllm, generation, "vllm.txt vs setup.cfg install_requires")
    assert "misconceptions" not in vllm


@pytest.mark.pins
def test_pins_resolve_afresh():
    """The committed pins still resolve together against PyPI, and the closure is complete: resolved with the pin
    files as constraints, the result equals them (network; about two minutes)."""
    proc = subprocess.run(
        [sys.executable, str(REQUIREMENTS / "resolve.py"), "--check", "--frozen"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1800,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-20000:]
    assert "OK:" in proc.stdout
