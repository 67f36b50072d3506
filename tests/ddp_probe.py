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
"""Run a training script and record, per process, what it did: for the multi-process tests.

`accelerate launch ... -m tests.ddp_probe OUT_DIR scripts/train_x.py ARGS...` runs the script unchanged, with
`transformers.Trainer.training_step` and `Trainer.train` wrapped to write `OUT_DIR/rank<R>-pid<P>.json`: the
process's view of the job (torch.distributed world size and rank, the Trainer's), a hash of every training example
it stepped on, and a hash of its model weights after training. Two processes that silently train as two rank-0 jobs
show up as world size 1, the same examples on both, and different weights.
"""

import hashlib
import json
import os
import runpy
import sys
from pathlib import Path


def _row_hashes(inputs: dict) -> list[str]:
    """One hash per example of the batch, over every `*input_ids` tensor (padding removed by its attention mask)."""
    import torch

    keys = sorted(k for k, v in inputs.items() if k.endswith("input_ids") and isinstance(v, torch.Tensor))
    hashes = []
    for i in range(len(inputs[keys[0]])):
        digest = hashlib.sha1()
        for key in keys:
            ids = inputs[key][i]
            mask = inputs.get(key.replace("input_ids", "attention_mask"))
            if mask is not None:
                ids = ids[mask[i].bool()]
            digest.update(key.encode() + ids.cpu().numpy().tobytes())
        hashes.append(digest.hexdigest())
    return hashes


def _weights_hash(model) -> str:
    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def install(out_dir: str | os.PathLike) -> None:
    import torch.distributed as dist
    from transformers import Trainer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seen: list[str] = []
    original_step, original_train = Trainer.training_step, Trainer.train

    def training_step(self, model, inputs, *args, **kwargs):
        seen.extend(_row_hashes(inputs))
        return original_step(self, model, inputs, *args, **kwargs)

    def train(self, *args, **kwargs):
        result = original_train(self, *args, **kwargs)
        initialized = dist.is_available() and dist.is_initialized()
        report = {
            "dist_world_size": dist.get_world_size() if initialized else 1,
            "dist_rank": dist.get_rank() if initialized else 0,
            "dist_backend": dist.get_backend() if initialized else None,
            "trainer_world_size": self.args.world_size,
            "trainer_process_index": self.args.process_index,
            "is_world_process_zero": self.is_world_process_zero(),
            "examples": seen,
            "global_step": self.state.global_step,
            "weights": _weights_hash(self.accelerator.unwrap_model(self.model)),
        }
        name = f"rank{report['dist_rank']}-pid{os.getpid()}.json"
        (out_dir / name).write_text(json.dumps(report))
        return result

    Trainer.training_step = training_step
    Trainer.train = train


if __name__ == "__main__":
    out, script, *args = sys.argv[1:]
    install(out)
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")
