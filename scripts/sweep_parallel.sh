#!/usr/bin/env bash
# The loop of sweep_loop.sh, JOBS runs at a time with `xargs -P`.
#
#   JOBS=2 WEIGHT_SCALES="1 2 4 8" scripts/sweep_parallel.sh
#
# Environment: BASE, WEIGHT_SCALES, OUT (default results/loop) as in sweep_loop.sh; JOBS
# (default: the number of cores). Extra arguments go to every `gradlab run`.
# xargs exits non-zero (123) when any run fails, and set -e passes that on; the other runs
# still finish. Each run gets one BLAS thread: parallelism comes from running several.
#
# With GNU parallel instead of xargs (its --halt stops the rest after the first failure):
#   parallel -j "$JOBS" --halt now,fail=1 \
#       gradlab run "$BASE" --set model.init.weight_scale={} --out "$OUT/ws={}" --quiet \
#       ::: $WEIGHT_SCALES
# `gradlab sweep` does all this from one spec file, and adds resume and SLURM shards.
set -euo pipefail

BASE=${BASE:-"$(dirname "$0")/base.yaml"}
WEIGHT_SCALES=${WEIGHT_SCALES:-"0.5 1 2 4 8"}
OUT=${OUT:-results/loop}
JOBS=${JOBS:-$(nproc)}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

# one weight scale per line; xargs runs `gradlab run ... <scale>` for each, JOBS at once
printf '%s\n' $WEIGHT_SCALES |
    xargs -P "$JOBS" -I{} \
        gradlab run "$BASE" --set "model.init.weight_scale={}" --out "$OUT/ws={}" --quiet "$@"
