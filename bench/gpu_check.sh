#!/usr/bin/env bash
# The project's GPU check, in under 8 minutes on one GPU: the CUDA tests, then the inversion
# throughput at the paper's settings (bench/gpu_throughput.py: 256 px, 500 candidates, 200 steps,
# VGG-19 feature term on, batch 8 / 32 / 64). Run from the repository root:
#
#     bench/gpu_check.sh [OUT_DIR]        (default: outputs/gpu_check)
#
# Writes OUT_DIR/environment.txt, cuda_tests.log, cuda_tests.xml, throughput.log and
# gpu_throughput.json; record the figures, with the card's name, in bench/RESULTS.md.
# Environment: PYTHON (default python3), GPU_CHECK_DATA (a synthetic test split; made, 64 images,
# when missing), THROUGHPUT_BUDGET_S (default 240), THROUGHPUT_SAMPLE (default 32,20),
# GPU_CHECK_DEVICE (default cuda; cpu with THROUGHPUT_ARGS="--image-size 32 ..." rehearses the script).
set -u
cd "$(dirname "$0")/.."
OUT_DIR=${1:-outputs/gpu_check}
PY=${PYTHON:-python3}
DATA=${GPU_CHECK_DATA:-datasets/synthetic/test}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR"
began=$(date +%s)

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
            "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")'
  nproc
} > "$OUT_DIR/environment.txt" 2>&1
cat "$OUT_DIR/environment.txt"

if [ ! -f "$DATA/annotations.json" ]; then
  echo "== making 64 synthetic test images in $DATA"
  "$PY" scripts/make_synthetic.py --config configs/synthetic.yaml --out "$(dirname "$DATA")" \
      --set 'synthetic.splits={test: 64}' --log-level WARNING || exit 1
fi

# The CUDA tests (every test named *cuda*; they skip on a machine without CUDA). Named files only:
# collecting the whole suite would import test modules that need packages a bare GPU image lacks.
echo "== CUDA tests"
timeout 200 "$PY" -m pytest -q -p no:cacheprovider -k cuda --junitxml="$OUT_DIR/cuda_tests.xml" \
    tests/test_cuda.py tests/test_renderer.py tests/test_inversion.py tests/test_evaluation.py tests/test_template.py \
    2>&1 | tee "$OUT_DIR/cuda_tests.log"
tests_status=${PIPESTATUS[0]}

echo "== throughput ($(( $(date +%s) - began )) s so far)"
timeout $(( ${THROUGHPUT_BUDGET_S:-240} + 90 )) "$PY" bench/gpu_throughput.py --device "${GPU_CHECK_DEVICE:-cuda}" --data "$DATA" --batch-sizes 8,32,64 \
    --sample "${THROUGHPUT_SAMPLE:-32,20}" --budget-s "${THROUGHPUT_BUDGET_S:-240}" \
    --out "$OUT_DIR/gpu_throughput.json" ${THROUGHPUT_ARGS:-} 2>&1 | tee "$OUT_DIR/throughput.log"
throughput_status=${PIPESTATUS[0]}

echo "== done in $(( $(date +%s) - began )) s: CUDA tests exit $tests_status, throughput exit $throughput_status"
[ "$tests_status" -eq 0 ] && [ "$throughput_status" -eq 0 ]
