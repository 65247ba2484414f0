#!/usr/bin/env bash
# 2D-OFDB-1k as published: 1,000 FractalDB categories, one image each, 512 px.
#   OUT=data/2D-OFDB-1k renderers/ofdb2d.sh [--classes 21000]
set -euo pipefail
source "$(dirname "$0")/_fdsl.sh"
$FDSL render ofdb2d --out "${OUT:-data/2D-OFDB-1k}" --classes 1000 --instances 1 --size 512 \
  --iterations 100000 --workers "$WORKERS" "$@"
