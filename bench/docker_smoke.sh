#!/usr/bin/env bash
# Build docker/Dockerfile where no registry image can be pulled, and smoke-test it: a base made locally from Debian
# packages stands in for python:3.11-slim-bookworm (debootstrap; Debian 12's CPython 3.11 with its headers in a venv;
# this machine's CA bundle, since its HTTPS goes through a proxy with its own CA), buildah builds the image with
# chroot isolation (podman run fails here: "crun: setrlimit RLIMIT_NOFILE: Operation not permitted"), then inside the
# image: the imports, and exp010 in miniature through `accelerate launch` with the saved model reloaded by retrieve.py.
# `vllm` builds docker/vllm/Dockerfile instead and runs, inside it, the imports, the generator's --help and the cost
# estimate of the 72B generator recipe (vLLM's CUDA build cannot generate without a GPU).
# Needs root, debootstrap and buildah (apt-get install debootstrap buildah), about 10 GB of disk, and the tiny models
# and small data the recipe tests build (make test-recipes; TINY and MINI below).
#   bash bench/docker_smoke.sh [train|vllm] [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:-train}"
work="${2:-/tmp/docker-smoke}"
tiny="${TINY:-$PWD/.cache/tiny-models/v1}"
mini="${MINI:-/tmp/mini}"   # holds eedi/ (a small built Eedi dataset with 2 folds)
export BUILDAH_ISOLATION=chroot
mkdir -p "$work"
if ! buildah images --format '{{.Name}}:{{.Tag}}' | grep -q '^localhost/python-local:3.11$'; then
  [ -d "$work/rootfs" ] || debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm \
    "$work/rootfs" http://deb.debian.org/debian
  cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/ca-certificates.crt"
  base=$(buildah from scratch)   # the debootstrapped tree as an image's one layer
  tar -C "$work/rootfs" -c . | tar -C "$(buildah mount "$base")" -x
  buildah umount "$base" >/dev/null && buildah commit --rm "$base" localhost/debian-bookworm-python:12
  printf '%s\n' 'FROM localhost/debian-bookworm-python:12' \
    'RUN apt-get update && apt-get install -y --no-install-recommends python3-dev && rm -rf /var/lib/apt/lists/*' \
    'RUN python3 -m venv /opt/python' 'ENV PATH=/opt/python/bin:$PATH' > "$work/Dockerfile.base"
  buildah bud -f "$work/Dockerfile.base" -t localhost/python-local:3.11 "$work"
fi
if [ "$image" = vllm ]; then
  time DOCKER=buildah BASE_IMAGE=localhost/python-local:3.11 docker/vllm/build.sh misconceptions-vllm:local
  ctr=$(buildah from misconceptions-vllm:local)
  trap 'buildah rm "$ctr" >/dev/null' EXIT
  buildah run "$ctr" -- python -c "import importlib.metadata as m, misconceptions, vllm, torch, transformers; \
print('misconceptions', m.version('misconceptions'), 'vllm', vllm.__version__, 'torch', torch.__version__, \
'transformers', transformers.__version__)"
  buildah run --env HF_HUB_OFFLINE=1 "$ctr" -- sh -c 'cd /opt/misconceptions \
    && python scripts/generate_synthetic.py --help | head -n 5 \
    && python scripts/estimate.py --config recipes/eedi/synthetic-qwen72b-awq.yaml --gpu A100-80GB --num_gpus 4'
  exit 0
fi
time DOCKER=buildah BASE_IMAGE=localhost/python-local:3.11 docker/build.sh misconceptions-train:local
ctr=$(buildah from misconceptions-train:local)
trap 'buildah rm "$ctr" >/dev/null' EXIT
buildah run "$ctr" -- python -c "import importlib.metadata as m, misconceptions, torch, gptqmodel, optimum, deepspeed; \
print('misconceptions', m.version('misconceptions'), 'torch', torch.__version__, 'gptqmodel', gptqmodel.__version__)"
rm -rf "$mini/img" && mkdir -p "$mini/img"
buildah run -v "$tiny:/mnt/tiny:ro" -v "$mini:/mnt/mini" --env HF_HUB_OFFLINE=1 --env GPTQMODEL_CPU_WORKERS=2 "$ctr" -- \
  sh -c 'cd /opt/misconceptions && accelerate launch --config_file accelerate_configs/ddp.yaml --num_processes 1 \
    scripts/train_retriever.py --config recipes/eedi/exp010.yaml --model_name_or_path /mnt/tiny/qwen2-gptq-int4 \
    --dataset_name /mnt/mini/eedi --output_dir /mnt/mini/img/exp010 --max_steps 2 --eval_steps 2 --save_steps 2 \
    --logging_steps 1 --eval_strategy steps --save_strategy steps --per_device_train_batch_size 4 \
    --per_device_eval_batch_size 8 --query_max_length 32 --document_max_length 32 --num_negatives 2 \
    && python scripts/retrieve.py --model /mnt/mini/img/exp010 --dataset /mnt/mini/eedi --fold 0 \
    --output_csv /mnt/mini/img/fold0.csv'
python3 -c "import json; a = json.load(open('$mini/img/exp010/eval_results.json'))['eval_map@25']; \
b = json.load(open('$mini/img/fold0_metrics.json'))['map@25']; print('in training', a, 'reloaded', b); assert a == b"
