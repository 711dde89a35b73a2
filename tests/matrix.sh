#!/usr/bin/env bash
# Run pytest under every CPU kernel set this machine can emulate and under 1 and 2 threads, so that a
# result resting on one machine's float rounding shows up here rather than in CI on another CPU.
# ATen's own kernels follow ATEN_CPU_CAPABILITY; oneDNN and MKL dispatch separately, so they are
# capped to the same instruction set. Usage: tests/matrix.sh PYTHON [pytest args...]
set -u
python=$1; shift
capabilities="default avx2"
grep -qw avx512f /proc/cpuinfo 2>/dev/null && capabilities="$capabilities avx512"
declare -A dnnl=([default]=SSE41 [avx2]=AVX2 [avx512]=AVX512_CORE)
declare -A mkl=([default]=SSE4_2 [avx2]=AVX2 [avx512]=AVX512)
failed=""
for capability in $capabilities; do
  for threads in 1 2; do
    echo "== ATEN_CPU_CAPABILITY=$capability OMP_NUM_THREADS=$threads"
    start=$SECONDS
    ATEN_CPU_CAPABILITY=$capability DNNL_MAX_CPU_ISA=${dnnl[$capability]} MKL_ENABLE_INSTRUCTIONS=${mkl[$capability]} \
      OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads "$python" -m pytest -q -p no:cacheprovider "$@" \
      || failed="$failed $capability/$threads"
    echo "   ($((SECONDS - start)) s)"
  done
done
if [ -n "$failed" ]; then
  echo "FAILED under:$failed"
  exit 1
fi
echo "passed under every combination ($capabilities) x (1, 2 threads)"
