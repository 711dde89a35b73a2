#!/usr/bin/env bash
# Where the inversion's starting camera comes from, side by side (issue 14's figures): on the first
# N synthetic test images at the committed settings of configs/synthetic.yaml, invert and evaluate
# with the camera from
#   gt_noise          the ground truth + noise (10 deg, 5 %, 5 %): information a user never has
#   predictor         the shipped camera predictor (pretrained/synthetic_camera_predictor_ours.pt)
#   search            the camera search alone (no predictor, no dataset camera)
#   predictor_search  the predictor's camera competing with the searched ones
# then the predictor and the search on a second split made with another seed and occluder fraction.
#
#     bench/camera_start.sh OUT_DIR [N] [DEVICE]        (defaults: 100 images, device auto)
#
# Writes OUT_DIR/<split>_<mode>.json (each run's metrics.json, whose "inversion" entry gives the
# seconds per image) and keeps the runs in RUNS_DIR (default outputs/camera_start_runs/). Each run is time-boxed by
# RUN_TIMEOUT_S (default 3600); one that is cut short is evaluated on the images it finished.
# MODES / SPLIT2_MODES choose the runs (default: all four, then predictor and search; empty: none;
# the second split is made with 100 images whatever N); BATCH sets
# inversion.batch_size (default: the config's; a GPU takes 50); EXTRA adds --set options to every
# inversion (a rehearsal: EXTRA='--set inversion.select_num=4 ...'); PREDICTOR another checkpoint.
set -u
cd "$(dirname "$0")/.."
OUT_DIR=${1:?usage: bench/camera_start.sh OUT_DIR [N] [DEVICE]}
N=${2:-100}
DEVICE=${3:-auto}
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# The runs themselves stay out of OUT_DIR (a GPU lease brings back only a few files of it).
RUNS=${RUNS_DIR:-outputs/camera_start_runs}
mkdir -p "$OUT_DIR" "$RUNS"
PREDICTOR=${PREDICTOR:-pretrained/synthetic_camera_predictor_ours.pt}
SPLIT1=datasets/synthetic/test
# The second split: same species, another scene seed and more occluders.
SPLIT2_ROOT=datasets/synthetic_seed7_occ35
SPLIT2=$SPLIT2_ROOT/test

[ -f "$SPLIT1/annotations.json" ] || "$PY" scripts/make_synthetic.py --config configs/synthetic.yaml \
    --set "synthetic.splits={test: 200}" --log-level WARNING || exit 1
[ -f "$SPLIT2/annotations.json" ] || "$PY" scripts/make_synthetic.py --config configs/synthetic.yaml \
    --out "$SPLIT2_ROOT" --set synthetic.seed=7 --set synthetic.occluder_fraction=0.35 \
    --set "synthetic.splits={test: 100}" --log-level WARNING || exit 1

mode_settings() {
  case $1 in
    gt_noise) echo "--set inversion.camera_init.predictor=null --set inversion.camera_init.use_dataset_camera=true
                    --set inversion.camera_init.search.enabled=false" ;;
    predictor) echo "--set inversion.camera_init.predictor=$PREDICTOR --set inversion.camera_init.search.enabled=false" ;;
    search) echo "--set inversion.camera_init.predictor=null --set inversion.camera_init.use_dataset_camera=false
                  --set inversion.camera_init.search.enabled=true" ;;
    predictor_search) echo "--set inversion.camera_init.predictor=$PREDICTOR
                            --set inversion.camera_init.search.enabled=true" ;;
    *) echo "unknown mode $1" >&2; exit 2 ;;
  esac
}

run() {  # split_name data mode
  local name=$1_$3 data=$2
  local out="$RUNS/$name"
  echo "== $name ($(date -u +%T))"
  # shellcheck disable=SC2046
  timeout "${RUN_TIMEOUT_S:-3600}" "$PY" scripts/invert.py --config configs/synthetic.yaml --data "$data" --out "$out" \
      --set device="$DEVICE" --set inversion.limit="$N" ${BATCH:+--set inversion.batch_size=$BATCH} \
      --set inversion.export.mesh=false --set inversion.export.turntable_frames=0 \
      $(mode_settings "$3") ${EXTRA:-} --log-level WARNING
  "$PY" scripts/evaluate.py --config configs/synthetic.yaml --results "$out" --data "$data" --set device="$DEVICE" \
      --set evaluation.grid_rows=0 --log-level WARNING && cp "$out/metrics.json" "$OUT_DIR/$name.json"
}

for mode in ${MODES-predictor search predictor_search gt_noise}; do run split1 "$SPLIT1" "$mode"; done
for mode in ${SPLIT2_MODES-predictor search}; do run split2 "$SPLIT2" "$mode"; done
echo "== done ($(date -u +%T))"
