#!/usr/bin/env bash
# Build the training image (docker/Dockerfile) from the repo root: ./docker/build.sh [TAG]
# DOCKER=podman uses podman; BASE_IMAGE=... another base with CPython 3.11 (the pins are resolved for it).
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-misconceptions-train:$(git rev-parse --short HEAD 2>/dev/null || echo local)}"
exec "${DOCKER:-docker}" build -f docker/Dockerfile ${BASE_IMAGE:+--build-arg BASE_IMAGE="$BASE_IMAGE"} -t "$tag" .
