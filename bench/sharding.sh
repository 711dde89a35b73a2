#!/usr/bin/env bash
# Images per hour of scripts/invert.py on this machine in three ways, on the first N synthetic test
# images at configs/synthetic.yaml's settings (issue 15's sharding target):
#   1proc_1thread   python scripts/invert.py, OMP_NUM_THREADS=1
#   2proc_1thread   torchrun --standalone --nproc_per_node=2 scripts/invert.py, OMP_NUM_THREADS=1 each
#   1proc_2threads  python scripts/invert.py, OMP_NUM_THREADS=2
#
#     bench/sharding.sh OUT_DIR [N]        (default: 8 images)
#
# Each run starts in a fresh folder, so it inverts all N images; its wall time counts everything the
# command does (start-up, loading, the inversion, the summary). Writes OUT_DIR/sharding.json. EXTRA adds
# --set options to every run (e.g. a shorter schedule); the camera starts from the dataset's camera +
# noise (the same for every run) and the VGG term uses random weights where the real ones are missing,
# so that its cost is counted.
set -eu
cd "$(dirname "$0")/.."
OUT_DIR=${1:?usage: bench/sharding.sh OUT_DIR [N]}
N=${2:-8}
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR"
ARGS=(scripts/invert.py --config configs/synthetic.yaml --set device=cpu --set "inversion.limit=$N"
      --set inversion.camera_init.predictor=null --set inversion.camera_init.use_dataset_camera=true
      --set inversion.loss.on_missing_vgg=random ${EXTRA:-})

run() {  # name, threads, launcher...
    local name=$1 threads=$2
    shift 2
    rm -rf "$OUT_DIR/$name"
    local start end
    start=$(date +%s.%N)
    OMP_NUM_THREADS=$threads "$@" "${ARGS[@]}" --out "$OUT_DIR/$name" > "$OUT_DIR/$name.log" 2>&1
    end=$(date +%s.%N)
    echo "$name $threads $start $end"
}

{
    run 1proc_1thread 1 "$PY"
    run 2proc_1thread 1 "$PY" -m torch.distributed.run --standalone --nproc_per_node=2
    run 1proc_2threads 2 "$PY"
} > "$OUT_DIR/times.txt"

"$PY" - "$OUT_DIR" "$N" <<'EOF'
import json, sys
from pathlib import Path

out, n = Path(sys.argv[1]), int(sys.argv[2])
figures = {}
for line in (out / "times.txt").read_text().splitlines():
    name, threads, start, end = line.split()
    summary = json.loads((out / name / "summary.json").read_text())
    seconds = float(end) - float(start)
    figures[name] = {"threads_per_process": int(threads), "images": n, "done": summary["done"],
                     "wall_s": round(seconds, 1), "images_per_hour": round(summary["done"] / seconds * 3600, 1),
                     "mean_iou": summary["mean_iou"]}
base = figures["1proc_1thread"]["images_per_hour"]
for entry in figures.values():
    entry["vs_1proc_1thread"] = round(entry["images_per_hour"] / base, 3)
(out / "sharding.json").write_text(json.dumps(figures, indent=2) + "\n")
print(json.dumps(figures, indent=2))
EOF
