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
"""What every script shares before its own work starts: logging, the recipe on the command line, the CPU threads a
run uses, the `--backend` choice and the output-path check of the inference scripts."""

import argparse
import logging
import os
import sys
from pathlib import Path

import yaml

from .errors import InputError


logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s - %(levelname)s - %(name)s - %(message)s"
RECIPE_SUFFIXES = (".yaml", ".yml")


def setup_script_logging(level: int = logging.INFO, stream=None) -> None:
    """One log format for a script's messages, to `stream` (stderr by default).

    `force=True` replaces the handlers of an earlier call, so a script's `main(argv)` called twice in one process (as
    the tests do) logs to the streams of the second call.
    """
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=stream or sys.stderr, force=True)


def recipe_first(argv: list[str]) -> list[str]:
    """`script.py recipes/x.yaml --flag v` -> `script.py --config recipes/x.yaml --flag v`: a recipe given as the
    first argument, as people type it, works as `--config` does."""
    if argv and not argv[0].startswith("-") and argv[0].endswith(RECIPE_SUFFIXES) and "--config" not in argv:
        return ["--config", argv[0], *argv[1:]]
    return argv


def parse_recipe_args(parser, argv: list[str] | None = None) -> tuple:
    """`TrlParser.parse_args_and_config` on `argv` (default sys.argv), a positional recipe accepted, and recipe
    errors (missing file, unknown or bad key) as one clear line with exit status 2."""
    args = recipe_first(list(sys.argv[1:] if argv is None else argv))
    if "--config" in args:
        index = args.index("--config") + 1
        if index >= len(args):
            print("error: --config needs a recipe file (recipes/<task>/<name>.yaml)", file=sys.stderr)  # noqa: T201
            sys.exit(2)
    try:
        return parser.parse_args_and_config(args)
    except (ValueError, FileNotFoundError, yaml.YAMLError) as err:
        print(f"error: {err}", file=sys.stderr)  # noqa: T201
        sys.exit(2)


def accelerate_set_one_thread(launcher_cmdline: list[str], launcher_environ: list[str]) -> bool:
    """True when `accelerate launch` set OMP_NUM_THREADS=1 on its own: its command line (`launcher_cmdline`) has no
    --num_cpu_threads_per_process and its environment (`launcher_environ`, KEY=VALUE items) no OMP_NUM_THREADS."""
    launched = any(Path(part).name in ("accelerate", "accelerate-launch") for part in launcher_cmdline) and (
        "launch" in launcher_cmdline or any(Path(part).name == "accelerate-launch" for part in launcher_cmdline)
    )
    launched = launched or "accelerate.commands.launch" in launcher_cmdline  # python -m accelerate.commands.launch
    chose_threads = any(part.startswith("--num_cpu_threads_per_process") for part in launcher_cmdline)
    user_threads = any(item.startswith("OMP_NUM_THREADS=") for item in launcher_environ)
    return launched and not chose_threads and not user_threads


def _parent_process() -> tuple[list[str], list[str]]:
    """The parent process's command line and environment (Linux /proc; empty where unreadable)."""
    parent = Path("/proc") / str(os.getppid())
    try:
        cmdline = (parent / "cmdline").read_bytes().decode(errors="replace").split("\0")
        environ = (parent / "environ").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return [], []
    return cmdline, environ


def use_cpu_cores() -> int:
    """The intra-op threads of a single-process CPU run: all of the machine's cores unless the user chose a number.

    Plain `accelerate launch` (no config file, no --num_cpu_threads_per_process) sets OMP_NUM_THREADS=1, which leaves
    all cores but one idle. A multi-process or GPU run, or a thread count the user set, is left as it is.
    Returns the thread count torch uses, which is logged.
    """
    import torch  # here: the generation scripts import this module and load torch only when a backend is built

    single_process = int(os.environ.get("WORLD_SIZE", "1")) == 1
    accelerate_default = os.environ.get("OMP_NUM_THREADS") == "1" and accelerate_set_one_thread(*_parent_process())
    if single_process and not torch.cuda.is_available() and accelerate_default:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(cores)
        os.environ["OMP_NUM_THREADS"] = str(cores)
    threads = torch.get_num_threads()
    if not torch.cuda.is_available():
        logger.info("Training on the CPU with %d threads", threads)
    return threads


def add_backend_argument(parser: argparse.ArgumentParser, task: str) -> None:
    """The inference scripts' `--backend` (task: classifier or retriever)."""
    from .onnx_backend import BACKENDS, CPU_DEFAULTS  # here: onnx_backend imports torch (see use_cpu_cores)

    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help=f"the {task}'s inference backend (default auto: {CPU_DEFAULTS[task]} on a CPU, torch on a GPU)",
    )


def check_output_file(path: str, flag: str = "--output_csv") -> Path:
    """The output path of an inference script, refused early when it names a folder."""
    if Path(path).is_dir():
        raise InputError(f"{path} is a folder; {flag} must be a file path")
    return Path(path)


def new_output_dir(path: str, overwrite: bool) -> Path:
    """A data builder's `--output_dir`, refused early when it exists and `--overwrite` was not given."""
    if Path(path).exists() and not overwrite:
        raise InputError(f"{path} already exists; pass --overwrite to replace it")
    return Path(path)
