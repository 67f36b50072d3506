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
"""Resolve the GPU environments against PyPI and pin their full closures (requirements/gpu.txt, gpu-flash.txt,
vllm.txt).

    python requirements/resolve.py --check    # resolve afresh; exit 1 with a diff where a committed file differs
    python requirements/resolve.py --write    # resolve afresh and rewrite the files

Each environment is resolved by `pip install --dry-run --ignore-installed --report` in a throwaway venv, against
PyPI alone (no pip configuration file, local index or constraint of this machine). The registry serves no PEP 658
metadata, so pip's `fast-deps` reads each wheel's METADATA through HTTP range requests instead of downloading the
wheel (torch, vllm and the CUDA libraries are several GB); sdists (gptqmodel, deepspeed, flash-attn and a few small
ones) are downloaded and their metadata built. The project itself is copied to a temporary folder first, so its
metadata build writes nothing into the work tree.
"""

from __future__ import annotations

import argparse
import configparser
import difflib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
HERE = REPO / "requirements"
INDEX_URL = "https://pypi.org/simple"
# pip of the resolving venv: >= 25.3 builds every sdist through PEP 517 (as a user's fresh venv does), and its
# fast-deps reads wheel metadata through range requests.
PIP = "pip==26.3"
# Only flash-attn's metadata build needs these (it imports torch and wheel, so it runs --no-build-isolation). Any
# torch serves: the metadata does not depend on the build. torch==2.13.0 is the toolkit's CPU pin (a local CPU wheel
# on the project's machines); elsewhere pass e.g. --build-torch "torch==2.13.0 --index-url <a CPU index>".
BUILD_TOOLS = ["setuptools==84.2.1", "wheel==0.48.0", "packaging"]
BUILD_TORCH = "torch==2.13.0"
# What vLLM generation imports from the toolkit's stack (the Makefile's .venv-vllm installs the same few).
GENERATION_DEPS = ("datasets", "scikit-learn", "gguf", "pandas", "pyyaml")
# Environment variables of pip that may stay: the rest (find-links, extra indexes, constraints) are the machine's.
KEEP_PIP_ENV = {"PIP_CERT", "PIP_CLIENT_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_PROXY", "PIP_TRUSTED_HOST", "PIP_RETRIES"}
PROJECT_FILES = ("setup.cfg", "pyproject.toml", "README.md", "src")

INSTALL_GPU = """\
Install (CPython {python} on Linux x86_64, an NVIDIA driver for CUDA 13; at the repo root):
  python3 -m venv .venv-gpu && .venv-gpu/bin/python -m pip install --upgrade pip
  .venv-gpu/bin/pip install -c requirements/gpu.txt -e ".[gpu]"
torch 2.14.1 on PyPI is the CUDA 13 build. gptqmodel and deepspeed come as sdists that build in pip's isolated
build environment without torch (their kernels compile at run time), so no --no-build-isolation is needed here.
The exact closure without resolving: pip install -r requirements/gpu.txt && pip install --no-deps -e .
FlashAttention: requirements/gpu-flash.txt. vLLM: requirements/vllm.txt (an environment of its own)."""
INSTALL_FLASH = """\
FlashAttention 2 on top of the GPU environment: requirements/gpu.txt plus flash-attn and the `wheel` its build
imports. flash-attn is an sdist whose setup.py imports torch and compiles CUDA kernels (unless a prebuilt wheel
matching torch/CUDA/Python is found on its GitHub releases), so it needs the CUDA torch installed first,
--no-build-isolation, and nvcc (CUDA 13 toolkit, CUDA_HOME set); the build takes long (MAX_JOBS caps its memory).
  .venv-gpu/bin/pip install -c requirements/gpu-flash.txt -e ".[gpu]"     # the GPU environment, CUDA torch included
  .venv-gpu/bin/pip install -c requirements/gpu-flash.txt wheel
  .venv-gpu/bin/pip install --no-build-isolation -c requirements/gpu-flash.txt -e ".[gpu,flash]"
Its metadata here was built with FLASH_ATTENTION_SKIP_CUDA_BUILD=TRUE (this machine has no CUDA_HOME)."""
INSTALL_VLLM = """\
vLLM generation on the GPU, an environment of its own: vllm pins torch==2.14.0 and transformers<5.21 (the toolkit
pins transformers 5.23.0, gptqmodel needs torch>=2.14.1), so the toolkit goes in without its dependencies, next to
the few the generation path imports ({generation}).
  python3 -m venv .venv-vllm-gpu && .venv-vllm-gpu/bin/python -m pip install --upgrade pip
  .venv-vllm-gpu/bin/pip install -r requirements/vllm.txt
  .venv-vllm-gpu/bin/pip install --no-deps -e ."""


def say(text: str) -> None:
    """Print a line of progress (stdout, flushed)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    """The distribution name of a requirement string."""
    return canonical(re.split(r"[\s<>=!~;\[(@]", spec.strip(), maxsplit=1)[0])


def read_setup_cfg(project: Path) -> tuple[list[str], dict[str, list[str]]]:
    """`install_requires` and `extras_require` of the project's setup.cfg, as requirement strings."""
    parser = configparser.ConfigParser()
    parser.read(project / "setup.cfg", encoding="utf-8")

    def lines(value: str) -> list[str]:
        return [line.strip() for line in value.splitlines() if line.strip() and not line.strip().startswith("#")]

    install = lines(parser.get("options", "install_requires", fallback=""))
    extras = {key: lines(value) for key, value in parser.items("options.extras_require")}
    return install, extras


def extra(extras: dict[str, list[str]], name: str) -> list[str]:
    """The requirements of one extra, or an error naming it when setup.cfg lacks it."""
    if not extras.get(name):
        raise SystemExit(f"setup.cfg has no `{name}` extra in [options.extras_require]")
    return extras[name]


def copy_project(project: Path, dest: Path) -> Path:
    """Copy what the project's metadata build reads to `dest` (egg-info and caches left out)."""
    dest.mkdir(parents=True)
    for name in PROJECT_FILES:
        source = project / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
        elif source.exists():
            shutil.copy2(source, dest / name)
    return dest


def run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a command, output captured (stdout and stderr together)."""
    return subprocess.run(cmd, check=False, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def make_venv(venv: Path, python: str, build_torch: str) -> Path:
    """Create (or reuse) the resolving venv: the pinned pip, setuptools and wheel, and a torch for flash-attn's
    metadata. These installs use this machine's own pip configuration (its local wheels); the resolutions do not."""
    venv_python = venv / "bin" / "python"
    stamp = venv / ".resolve-stamp"
    wanted = json.dumps([python, PIP, BUILD_TOOLS, build_torch])
    if venv_python.exists() and stamp.exists() and stamp.read_text() == wanted:
        say(f"reusing the venv {venv}")
        return venv_python
    start = time.monotonic()
    steps = [
        [python, "-m", "venv", "--clear", str(venv)],
        [str(venv_python), "-m", "pip", "install", "--quiet", PIP],
        [str(venv_python), "-m", "pip", "install", "--quiet", *BUILD_TOOLS, *shlex.split(build_torch)],
    ]
    for cmd in steps:
        proc = run(cmd)
        if proc.returncode:
            raise SystemExit(f"setting up the venv failed: {shlex.join(cmd)}\n{proc.stdout}")
    stamp.write_text(wanted)
    say(f"venv {venv}: {PIP}, {' '.join(BUILD_TOOLS)}, {build_torch} ({time.monotonic() - start:.0f} s)")
    return venv_python


def pip_env(extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a resolution: no pip configuration file and none of this machine's pip variables."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_") or key in KEEP_PIP_ENV}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    env.update(extra_env or {})
    return env


@dataclass
class Resolution:
    """What one `pip install --dry-run --report` resolved."""

    pins: dict[str, str]  # canonical name -> version, the project itself left out
    markers: dict[str, str]  # the environment pip evaluated markers in
    downloads: list[str]  # files pip downloaded whole (sdists), with sizes
    seconds: float


def resolve(
    venv_python: Path,
    args: list[str],
    workdir: Path,
    label: str,
    verbose: bool,
    extra_env: dict[str, str] | None = None,
) -> Resolution:
    """Resolve `args` (requirements and pip options) with a dry run and return the pinned closure."""
    report = workdir / f"{label}-report.json"
    cmd = [str(venv_python), "-m", "pip", "install", "--dry-run", "--ignore-installed", "--report", str(report)]
    cmd += ["--use-feature=fast-deps", "--index-url", INDEX_URL, "--progress-bar", "off", *args]
    say(f"[{label}] {shlex.join(['pip', *cmd[3:]])}")
    start = time.monotonic()
    proc = run(cmd, env=pip_env(extra_env))
    seconds = time.monotonic() - start
    if verbose or proc.returncode:
        say(proc.stdout.rstrip())
    if proc.returncode:
        raise SystemExit(f"[{label}] did not resolve (pip exited {proc.returncode}, {seconds:.0f} s)")
    data = json.loads(report.read_text())
    pins = {}
    for item in data["install"]:
        name = canonical(item["metadata"]["name"])
        if name != "misconceptions":
            pins[name] = item["metadata"]["version"]
    out = proc.stdout.splitlines()
    downloads = [line.split("Downloading ", 1)[1] for line in out if "Downloading " in line]
    cached = [line.split("Using cached ", 1)[1] for line in out if "Using cached " in line]
    say(
        f"[{label}] {len(pins)} packages in {seconds:.0f} s; downloaded whole: {', '.join(downloads) or 'nothing'}"
        f"; from pip's wheel cache: {', '.join(cached) or 'nothing'} (every other wheel: metadata only)"
    )
    return Resolution(pins, data["environment"], downloads, seconds)


def render(title: str, install: str, inputs: list[str], res: Resolution) -> str:
    """The text of a pin file: a comment header, then one `name==version` line per package, sorted."""
    env = res.markers
    header = [
        title,
        "Generated by `python requirements/resolve.py --write`; `--check` (make check-pins) re-resolves and diffs.",
        f"Resolved with `{PIP} install --dry-run --ignore-installed --report` against {INDEX_URL} only, for",
        f"{env['implementation_name']} {env['python_version']} on {env['sys_platform']} {env['platform_machine']}. Top level:",
        *textwrap.wrap(" ".join(inputs), 114, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False),
        "",
        *install.splitlines(),
    ]
    lines = [f"# {line}".rstrip() for line in header]
    lines += [f"{name}=={version}" for name, version in sorted(res.pins.items())]
    return "\n".join(lines) + "\n"


def constraints_file(path: Path, pins: dict[str, str]) -> Path:
    """Write `pins` as a constraints file and return its path."""
    path.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
    return path


def resolve_all(project: Path, venv_python: Path, workdir: Path, frozen: bool, verbose: bool) -> dict[str, str]:
    """Resolve the three environments and return {file name: text}."""
    install, extras = read_setup_cfg(project)
    copy = copy_project(project, workdir / "project")

    def committed(name: str) -> list[str]:
        return ["-c", str(HERE / name)] if frozen and (HERE / name).exists() else []

    # The GPU training environment: the project with its `gpu` extra, exactly as a user installs it.
    gpu_inputs = ["-e", f"{copy}[gpu]"]
    gpu = resolve(venv_python, gpu_inputs + committed("gpu.txt"), workdir, "gpu", verbose)
    files = {
        "gpu.txt": render(
            "requirements/gpu.txt: the GPU training environment, pinned (issue 18).",
            INSTALL_GPU.format(python=gpu.markers["python_version"]),
            ["misconceptions[gpu], from setup.cfg:", *install, "and the gpu extra:", *extra(extras, "gpu")],
            gpu,
        )
    }

    # flash-attn on top of those pins: its sdist's metadata build imports torch, hence --no-build-isolation.
    flash_reqs = [*extra(extras, "flash"), "wheel"]
    gpu_constraints = constraints_file(workdir / "gpu-constraints.txt", gpu.pins)
    flash_args = ["--no-build-isolation", "-c", str(gpu_constraints), *flash_reqs, *committed("gpu-flash.txt")]
    flash = resolve(
        venv_python, flash_args, workdir, "gpu-flash", verbose, {"FLASH_ATTENTION_SKIP_CUDA_BUILD": "TRUE"}
    )
    clash = {name: (gpu.pins[name], v) for name, v in flash.pins.items() if gpu.pins.get(name, v) != v}
    if clash:
        raise SystemExit(f"[gpu-flash] differs from the gpu pins: {clash}")
    merged = Resolution({**gpu.pins, **flash.pins}, flash.markers, flash.downloads, flash.seconds)
    files["gpu-flash.txt"] = render(
        "requirements/gpu-flash.txt: the GPU training environment with FlashAttention 2, pinned (issue 18).",
        INSTALL_FLASH,
        ["the gpu.txt closure +", *flash_reqs],
        merged,
    )

    # vLLM: vllm itself plus the generation path's few dependencies at the toolkit's versions.
    by_name = {requirement_name(spec): spec for spec in install}
    generation = [by_name[name] for name in GENERATION_DEPS if name in by_name]
    vllm_reqs = [*extra(extras, "vllm"), *generation]
    vllm = resolve(venv_python, vllm_reqs + committed("vllm.txt"), workdir, "vllm", verbose)
    files["vllm.txt"] = render(
        "requirements/vllm.txt: the vLLM generation environment (GPU), pinned (issue 18).",
        INSTALL_VLLM.format(generation=", ".join(generation)),
        vllm_reqs,
        vllm,
    )
    return files


def main(argv: list[str] | None = None) -> int:
    """Resolve, then write or check the pin files; 0 when they agree (or were written), 1 on a difference."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite the pin files from a fresh resolution")
    mode.add_argument("--check", action="store_true", help="exit 1 with a diff if a pin file differs from it")
    parser.add_argument(
        "--frozen",
        action="store_true",
        help="resolve with the committed files as constraints: checks that the pins still resolve together and "
        "are complete, without failing on newer releases of unpinned packages",
    )
    parser.add_argument("--project", type=Path, default=REPO, help="the project to resolve (default: this repo)")
    parser.add_argument("--venv", type=Path, help="a venv folder to create once and reuse (default: a temporary one)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter of the venv (default: this one)")
    parser.add_argument("--build-torch", default=BUILD_TORCH, help="pip arguments that install the venv's torch")
    parser.add_argument("-v", "--verbose", action="store_true", help="print pip's whole output")
    args = parser.parse_args(argv)

    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="resolve-pins-") as tmp:
        workdir = Path(tmp)
        venv_python = make_venv(args.venv or workdir / "venv", args.python, args.build_torch)
        files = resolve_all(args.project.resolve(), venv_python, workdir, args.frozen, args.verbose)
    differ = []
    for name, text in files.items():
        path = HERE / name
        if args.write:
            path.write_text(text)
            say(f"wrote {path.relative_to(REPO)}")
            continue
        old = path.read_text() if path.exists() else ""
        if old != text:
            differ.append(name)
            diff = difflib.unified_diff(
                old.splitlines(keepends=True), text.splitlines(keepends=True), f"requirements/{name}", "resolved"
            )
            sys.stdout.writelines(diff)
    elapsed = time.monotonic() - start
    if differ:
        say(
            f"FAILED: {', '.join(differ)} differ from a fresh resolution ({elapsed:.0f} s); "
            "`python requirements/resolve.py --write` rewrites them"
        )
        return 1
    say(f"OK: {', '.join(files)} {'written' if args.write else 'match a fresh resolution'} ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
