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
"""Run a repo script and SIGKILL it at the moment it moves a finished output into place (tests/test_faults.py).

    python tests/fault_runner.py KILL_PATH scripts/retrieve.py --model ... --output_csv KILL_PATH

Every path the script moves into place (os.replace, and the folder swap of io_utils._exchange) is appended to
$FAULT_LOG; when the destination is KILL_PATH the process kills itself with SIGKILL, as `kill -9` would: no Python
cleanup runs, so whatever the kill leaves on disk is what a real crash there leaves.
"""

import os
import runpy
import signal
import sys
from pathlib import Path


def main() -> None:
    kill_path = Path(sys.argv[1]).absolute()
    script = sys.argv[2]
    log = os.environ.get("FAULT_LOG")
    real_replace = os.replace

    def arrive(destination) -> None:
        destination = Path(destination).absolute()
        if log:
            with open(log, "a") as handle:
                handle.write(f"{destination}\n")
        if destination == kill_path:
            os.kill(os.getpid(), signal.SIGKILL)

    def replace(src, dst, *args, **kwargs):
        arrive(dst)
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace
    from misconceptions import io_utils

    real_exchange = io_utils._exchange

    def exchange(a, b):
        arrive(b)
        return real_exchange(a, b)

    io_utils._exchange = exchange
    sys.argv = sys.argv[2:]
    sys.path.insert(0, str(Path(script).resolve().parent))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
