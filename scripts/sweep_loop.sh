#!/usr/bin/env bash
# The simplest sweep: one `gradlab run` after another, one weight scale each.
#
#   scripts/sweep_loop.sh                                   # defaults below
#   WEIGHT_SCALES="1 4" OUT=results/try scripts/sweep_loop.sh
#
# Environment: BASE (config, default scripts/base.yaml), WEIGHT_SCALES (space-separated),
# OUT (parent folder, default results/loop). Any further arguments go to every
# `gradlab run`, e.g. `scripts/sweep_loop.sh --set train.steps=50`.
# Stops at the first run that fails (set -e); a re-run with --force is up to you.
set -euo pipefail

BASE=${BASE:-"$(dirname "$0")/base.yaml"}
WEIGHT_SCALES=${WEIGHT_SCALES:-"0.5 1 2 4 8"}
OUT=${OUT:-results/loop}

for s in $WEIGHT_SCALES; do
    echo "== weight_scale=$s" >&2
    gradlab run "$BASE" --set "model.init.weight_scale=$s" --out "$OUT/ws=$s" --quiet "$@"
done
