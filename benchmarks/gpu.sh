#!/usr/bin/env bash
# The benchmark's headline rows on one GPU, XLA off and on, into benchmarks/RESULTS-gpu.md.
#
#   benchmarks/gpu.sh                  # on a GPU machine: about 5-8 minutes
#   benchmarks/gpu.sh --dry-run        # anywhere: the same commands on the tiny model (seconds)
#   benchmarks/gpu.sh --results PATH   # write elsewhere
#
# Rows: the public call vs the compiled forward pass (small CNN b=1/16/64, nested MobileNetV2
# b=16, ResNet50 b=1/16), the targeted methods, Eigen-CAM/Eigen-Grad-CAM and the guided pair
# vs Grad-CAM, and the first call in fresh processes. Each command has its own time limit so
# that the whole run stays under 8 minutes; a command that runs out is reported, not fatal.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
RESULTS=benchmarks/RESULTS-gpu.md
DRY=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY=1; shift ;;
    --results) RESULTS="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
METHODS=gradcam,gradcam++,hirescam,xgradcam,layercam,eigencam,eigengradcam,guided-backprop,guided-gradcam
if [[ $DRY == 1 ]]; then
  MODELS=tiny; EXTRA=(--smoke); LIMIT_MAIN=120; LIMIT_FIRST=120
  [[ "$RESULTS" == benchmarks/RESULTS-gpu.md ]] && RESULTS=$(mktemp -d)/RESULTS-gpu.md
else
  "$PYTHON" -c "import tensorflow as tf, sys; sys.exit(not tf.config.list_physical_devices('GPU'))" \
    || { echo "gpu.sh: TensorFlow sees no GPU (use --dry-run to check the script)" >&2; exit 1; }
  MODELS=small,nested,resnet50; EXTRA=(--repeats 7 --min-seconds 1 --recipe-repeats 0)
  LIMIT_MAIN=330; LIMIT_FIRST=150
fi
status=0
start=$SECONDS
timeout "$LIMIT_MAIN" "$PYTHON" benchmarks/bench_explain.py --models "$MODELS" \
  --sections speed,methods --methods "$METHODS" --xla off,on "${EXTRA[@]}" --results "$RESULTS" \
  || { echo "gpu.sh: speed/methods stopped (exit $?)" >&2; status=1; }
FIRST_MODELS=small,resnet50; [[ $DRY == 1 ]] && FIRST_MODELS=tiny
timeout "$LIMIT_FIRST" "$PYTHON" benchmarks/bench_explain.py --models "$FIRST_MODELS" \
  --sections first --xla off,on "${EXTRA[@]}" --results "$RESULTS" \
  || { echo "gpu.sh: first-call section stopped (exit $?)" >&2; status=1; }
echo "gpu.sh: wrote $RESULTS in $((SECONDS - start)) s"
exit $status
