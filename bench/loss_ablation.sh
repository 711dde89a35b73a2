#!/usr/bin/env bash
# The paper's loss ablation, reproduced (issue 16 section 4): on the first N synthetic test images at
# the committed settings of configs/synthetic.yaml (the shipped camera predictor's starting camera)
# but with the paper's mask weight (10; the config weighs it 30) and no refinement, so that the rows
# compare the paper's losses alone, invert and evaluate with each alternative of the inversion loss
# (docs/method.md section 7):
#   chamfer      the paper's loss: Chamfer mask + pixel-level Chamfer texture (+ VGG feature, latent)
#   l1           texture_loss: l1, the masked L1 in place of the pixel-level Chamfer texture term
#   contextual   texture_loss: contextual (Mechrez et al. 2018 on the foreground colours)
#   raster       mask_loss: raster, 1 - soft IoU of the soft silhouette in place of the Chamfer mask
#   l1_alone     (not in the default list) l1 without the VGG feature term: the paper's "L1" row
# Each changes one thing against chamfer; the feature term stays as the config has it.
#
#     bench/loss_ablation.sh OUT_DIR [N] [DEVICE]        (defaults: 100 images, device auto)
#
# Writes OUT_DIR/<mode>.json (each run's metrics.json, whose "inversion" entry gives the seconds per
# image); `python bench/loss_ablation_table.py OUT_DIR` prints the table. The runs stay in RUNS_DIR
# (default outputs/loss_ablation_runs/); rerunning the script resumes them. Each run is time-boxed by
# RUN_TIMEOUT_S (default 3600); one that is cut short is evaluated on the images it finished.
# MODES chooses the runs (default: chamfer l1 contextual raster); DATA another split (default
# datasets/synthetic/test, made when missing); BATCH sets inversion.batch_size (default: the
# config's; a GPU takes 50); EXTRA adds --set options to every inversion (a rehearsal:
# EXTRA='--set inversion.select_num=4 --set inversion.iterations=[2] ...'); EVAL_EXTRA adds --set
# options to every evaluation (e.g. "--set evaluation.metrics=[mask_iou,full_mask_iou,novel_view_iou,
# chamfer_3d,rotation_error_deg,fid_1]": a texture metric, with the Inception weights).
set -u
cd "$(dirname "$0")/.."
OUT_DIR=${1:?usage: bench/loss_ablation.sh OUT_DIR [N] [DEVICE]}
N=${2:-100}
DEVICE=${3:-auto}
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# The runs themselves stay out of OUT_DIR (a GPU lease brings back only a few files of it).
RUNS=${RUNS_DIR:-outputs/loss_ablation_runs}
mkdir -p "$OUT_DIR" "$RUNS"
DATA=${DATA:-datasets/synthetic/test}

[ -f "$DATA/annotations.json" ] || { [ "$DATA" = datasets/synthetic/test ] && "$PY" scripts/make_synthetic.py \
    --config configs/synthetic.yaml --set "synthetic.splits={test: 200}" --log-level WARNING; } || exit 1

mode_settings() {
  case $1 in
    chamfer) echo "--set inversion.loss.texture_loss=chamfer --set inversion.loss.mask_loss=chamfer" ;;
    l1) echo "--set inversion.loss.texture_loss=l1" ;;
    contextual) echo "--set inversion.loss.texture_loss=contextual" ;;
    raster) echo "--set inversion.loss.mask_loss=raster" ;;
    l1_alone) echo "--set inversion.loss.texture_loss=l1 --set inversion.loss.feature_weight=0" ;;
    *) echo "unknown mode $1" >&2; return 2 ;;
  esac
}

run() {  # mode
  local out="$RUNS/$1" settings
  settings=$(mode_settings "$1") || exit 2
  echo "== $1 ($(date -u +%T))"
  # shellcheck disable=SC2086
  timeout "${RUN_TIMEOUT_S:-3600}" "$PY" scripts/invert.py --config configs/synthetic.yaml --data "$DATA" --out "$out" \
      --set device="$DEVICE" --set inversion.limit="$N" ${BATCH:+--set inversion.batch_size=$BATCH} \
      --set inversion.export.mesh=false --set inversion.export.turntable_frames=0 \
      --set inversion.loss.mask_weight=10 --set inversion.refine.texture=false --set inversion.refine.shape=false \
      $settings ${EXTRA:-} --log-level WARNING
  "$PY" scripts/evaluate.py --config configs/synthetic.yaml --results "$out" --data "$DATA" --set device="$DEVICE" \
      --set evaluation.grid_rows=0 ${EVAL_EXTRA:-} --log-level WARNING && cp "$out/metrics.json" "$OUT_DIR/$1.json"
}

for mode in ${MODES-chamfer l1 contextual raster}; do run "$mode"; done
echo "== done ($(date -u +%T))"
