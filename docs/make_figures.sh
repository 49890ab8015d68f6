#!/usr/bin/env bash
# Regenerate docs/figures/ -- every figure and number in docs/tutorial.md -- from configs/.
# Usage: docs/make_figures.sh        (about 3 minutes on 2 cores, and about 10 more for the
#                                     trainability sweeps of section 9; `make figures` does the same)
# Runs go to results/tutorial/ (git-ignored); the printed reports to results/tutorial/*.txt.
# At the end it writes the versions and the BLAS kernel the runs used into docs/tutorial.md
# (between the "make_figures: environment" markers).
#   docs/make_figures.sh --runs-only --out DIR   only the runs and reports, into DIR: no
#                                                figures, docs/ untouched (to compare kernels)
set -euo pipefail
OUT=results/tutorial
RUNS_ONLY=0
OUT_GIVEN=0
while (($#)); do
    case $1 in
        --runs-only) RUNS_ONLY=1 ;;
        --out) OUT=${2:?--out needs a folder} OUT_GIVEN=1; shift ;;
        *) echo "usage: docs/make_figures.sh [--runs-only] [--out DIR]" >&2; exit 2 ;;
    esac
    shift
done
# one BLAS thread per process: these networks are small, and threads fight when the machine is busy
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
[[ $OUT = /* ]] || OUT=$PWD/$OUT
cd "$(dirname "$0")/.."
if [[ -x .venv/bin/gradlab ]]; then BIN=.venv/bin/; else BIN=; fi
GRADLAB=${BIN}gradlab
PYTHON=${BIN}python
[[ -n $BIN ]] || PYTHON=python3
FIG=docs/figures
if ((OUT_GIVEN)) && [[ -e $OUT && ! -e $OUT/.make_figures && -n $(ls -A "$OUT" 2>/dev/null) ]]; then
    echo "make_figures.sh: $OUT exists and is not this script's output; not overwriting it" >&2
    exit 2
fi
rm -rf "$OUT"  # this script's own output: start clean (a sweep would resume otherwise)
mkdir -p "$OUT"
touch "$OUT/.make_figures"
((RUNS_ONLY)) || mkdir -p "$FIG"

run() {  # run CONFIG FOLDER [--set ...]: one experiment, its report kept next to it
    local config=$1 folder=$2
    shift 2
    $GRADLAB run "configs/$config.yaml" --out "$OUT/$folder" --force --quiet "$@" \
        | tee "$OUT/${folder//\//_}.txt"
}
figure() {  # figure SOURCE.png NAME: copy one figure into docs/figures/
    ((RUNS_ONLY)) || cp "$OUT/$1" "$FIG/$2.png"
}
plot() {  # plot FOLDER: draw the figures of a run folder (not with --runs-only)
    ((RUNS_ONLY)) || $GRADLAB plot "$OUT/$1" > /dev/null
}
screenshot() {  # screenshot FOLDER NAME FRAGMENT: `gradlab report FOLDER` in headless Chromium
    ((RUNS_ONLY)) && return
    local gradlab=$GRADLAB browser profile
    [[ $gradlab != */* ]] || gradlab=$PWD/$gradlab
    (cd "$OUT" && $gradlab report "$1" > /dev/null)  # the page names the folder as given
    browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome) || {
        echo "make_figures.sh: no chromium on PATH (apt-get install chromium): $FIG/$2.png kept" >&2
        return
    }
    profile=$(mktemp -d)
    "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --host-resolver-rules="MAP * ~NOTFOUND" --user-data-dir="$profile" \
        --hide-scrollbars --virtual-time-budget=5000 --window-size=1280,2300 \
        --screenshot="$PWD/$FIG/$2.png" "file://$OUT/$1/report.html#$3" 2> /dev/null
    rm -rf "$profile"
}

# 1. vanishing, exploding, critical: the per-layer factor M against theory
run vanishing flow/vanishing
run critical flow/critical
run exploding flow/exploding
$GRADLAB theory --activation sigmoid --weight-scale 4 | tee "$OUT/theory_4.txt"
$GRADLAB theory --activation sigmoid --weight-scale 14 | tee "$OUT/theory_14.txt"
plot flow
figure flow/vanishing/plots/gradient_by_layer.png vanishing_gradient_by_layer
figure flow/vanishing/plots/gradient_heatmap.png vanishing_heatmap
figure flow/exploding/plots/gradient_by_layer.png exploding_gradient_by_layer
figure flow/exploding/plots/loss.png exploding_loss
figure flow/critical/plots/gradient_by_layer.png critical_gradient_by_layer
figure flow/plots/compare_gradient_by_layer.png flow_compare

# 2. clipping the exploding network: by norm keeps the direction, by value does not
run exploding clipping/none
run clip_norm clipping/norm
run clip_value clipping/value
plot clipping
figure clipping/norm/plots/clipping.png clip_norm_clipping
figure clipping/value/plots/clipping.png clip_value_clipping
figure clipping/plots/compare_loss.png clipping_loss

# 3. input normalization
run input_raw input/raw
run input_norm input/normalized
plot input
figure input/plots/compare_loss.png input_loss
figure input/raw/plots/saturation.png input_raw_saturation

# 4. BatchNorm and LayerNorm against the plain network
run vanishing normalization/none
run batchnorm normalization/batch
run layernorm normalization/layer
plot normalization
figure normalization/plots/compare_gradient_by_layer.png normalization_gradient_by_layer
figure normalization/plots/compare_loss.png normalization_loss
figure normalization/batch/plots/loss.png batchnorm_loss

# 5. full-batch gradient descent against minibatch SGD
$GRADLAB sweep configs/sweeps/gd_vs_sgd.yaml --out "$OUT/gd_vs_sgd" --quiet | tee "$OUT/gd_vs_sgd.txt"
$GRADLAB summary "$OUT/gd_vs_sgd" | tee "$OUT/gd_vs_sgd_summary.txt"
plot gd_vs_sgd
figure gd_vs_sgd/plots/compare_loss.png gd_vs_sgd_loss

# 6. the phase diagram: weight scale x depth
$GRADLAB sweep configs/sweeps/phase_diagram.yaml --out "$OUT/phase_diagram" --quiet \
    | tee "$OUT/phase_diagram.txt"
$GRADLAB summary "$OUT/phase_diagram" | tee "$OUT/phase_diagram_summary.txt"
plot phase_diagram
figure phase_diagram/plots/phase_factor.png phase_diagram
screenshot phase_diagram phase_diagram_report "sort=M_init"

# 8. a bottleneck: hidden layers of different widths
run bottleneck widths/bottleneck
plot widths
figure widths/bottleneck/plots/gradient_by_layer.png bottleneck_gradient_by_layer

# 9. residual networks: the 200-deep tanh network plain and residual; pre- against post-norm
run residual residual/residual
$GRADLAB theory --activation tanh --weight-scale 0.7 --residual full --branch-scale 0.1 \
    --depth 200 | tee "$OUT/theory_residual.txt"
$GRADLAB sweep configs/sweeps/residual_vs_plain.yaml --out "$OUT/residual_vs_plain" --quiet \
    | tee "$OUT/residual_vs_plain.txt"
$GRADLAB summary "$OUT/residual_vs_plain" | tee "$OUT/residual_vs_plain_summary.txt"
$GRADLAB sweep configs/sweeps/post_vs_pre_norm.yaml --out "$OUT/post_vs_pre_norm" --quiet \
    | tee "$OUT/post_vs_pre_norm.txt"
plot residual
plot residual_vs_plain
plot post_vs_pre_norm
figure residual/residual/plots/gradient_by_layer.png residual_gradient_by_layer
figure residual_vs_plain/plots/compare_gradient_by_layer.png residual_vs_plain_gradient
figure residual_vs_plain/plots/compare_loss.png residual_vs_plain_loss
figure post_vs_pre_norm/plots/compare_gradient_by_layer.png post_vs_pre_norm_gradient

# 10. dynamical isometry: the Jacobian's singular values, Gaussian against orthogonal weights
$GRADLAB theory --activation tanh --weight-scale 1 --bias-scale 0.05 | tee "$OUT/theory_tanh_isometry.txt"
$GRADLAB theory --activation relu --weight-scale 1.4142135623730951 | tee "$OUT/theory_relu_isometry.txt"
$GRADLAB sweep configs/sweeps/isometry.yaml --out "$OUT/isometry/tanh" --quiet | tee "$OUT/isometry_tanh.txt"
run isometry_relu isometry/relu/gaussian
run isometry_relu isometry/relu/orthogonal --set model.init.scheme=orthogonal
plot isometry/tanh
plot isometry/relu
figure isometry/tanh/plots/compare_spectrum.png isometry_tanh_spectrum
figure isometry/tanh/plots/compare_loss.png isometry_tanh_loss
figure isometry/relu/plots/compare_spectrum.png isometry_relu_spectrum
figure isometry/relu/plots/compare_loss.png isometry_relu_loss

# 11. learning-rate warmup: the same lr diverges from the start and trains after a warmup
run warmup warmup/none --set train.schedule.warmup_steps=0
run warmup warmup/warmup
plot warmup
figure warmup/plots/compare_update_ratio.png warmup_update_ratio

# 7. trainability on scikit-learn's digits (needs pip install -e '.[datasets]'): the
# trainability spec on a coarser grid (42 points, a few minutes with 2 jobs), without and with
# dropout 0.1; `gradlab plot` prints the best-separating k (kept in the .txt files)
for variant in trainability trainability_dropout; do
    dropout=()
    [[ $variant = trainability ]] || dropout=(--set model.dropout=0.1)
    $GRADLAB sweep configs/sweeps/trainability_coarse.yaml --out "$OUT/$variant" --jobs 2 \
        --quiet "${dropout[@]}" | tee "$OUT/$variant.txt"
    ((RUNS_ONLY)) || $GRADLAB plot "$OUT/$variant" | grep '^trainability: ' \
        | tee "$OUT/${variant}_plot.txt"
    figure "$variant/plots/trainability.png" "$variant"
done

if ((RUNS_ONLY)); then
    echo "reports in $OUT/"
    exit 0
fi
# 12. what the numbers were computed with, into the tutorial (from the runs' meta.json)
$PYTHON docs/record_environment.py docs/tutorial.md "$OUT"
echo "figures in $FIG/, reports in $OUT/"
