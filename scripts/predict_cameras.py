"""Predict the camera of every photo in a folder, in MeshInversion's cmr_pred_cam.pth format.

    python scripts/predict_cameras.py --config configs/synthetic.yaml --data DIR [--checkpoint PATH]
        [--out FILE.pth] [--set camera.predict.auto_masks=true]

DIR is in the folder format (meshinv/data/folder.py: images/, masks/). The output is a torch file
(load it with weights_only=True) holding {image stem: {"pred_cam": (7,) [s, tx, ty, qw, qx, qy, qz],
"pred_pose_overlay_iou": float}}; the cameras are in the NDC of the crop of the mask's box padded by
camera.padding, at any resolution. With auto_masks, images without masks/<stem>.png are segmented
first (the `segment` section) and their masks written there; images where nothing is found are left out.
"""

from __future__ import annotations

import logging
from pathlib import Path

from meshinv.config import ExperimentConfig
from meshinv.data.camera_predictions import PREDICTIONS_FILE
from meshinv.geometry.template import build_template
from meshinv.models.camera import camera_predictor_from_checkpoint, read_camera_checkpoint
from meshinv.training.camera import FINAL, TRUSTED_IOU, overlay_shape, predict_folder_cameras
from meshinv.utils.config import parse_cli
from meshinv.utils.device import resolve_device
from meshinv.utils.io import save_torch
from meshinv.utils.logging import setup_logging

log = logging.getLogger("predict_cameras")


def main() -> None:
    cfg, args = parse_cli(ExperimentConfig, __doc__.splitlines()[1],
                          shortcuts={"--data": "camera.predict.data", "--checkpoint": "camera.predict.checkpoint",
                                     "--out": "camera.predict.out"})
    setup_logging(args.log_level)
    p = cfg.camera.predict
    if not p.data:
        raise SystemExit("predict_cameras.py: give the photos' folder with --data DIR")
    device = resolve_device(cfg.device)
    checkpoint = read_camera_checkpoint(p.checkpoint or Path(cfg.camera.out_dir) / FINAL)
    model = camera_predictor_from_checkpoint(checkpoint, device)
    shape = overlay_shape(build_template(cfg.template), cfg.camera.mean_shape, checkpoint=checkpoint)
    log.info("overlay IoU shape: %s", shape.source)
    predictions = predict_folder_cameras(model, p.data, cfg.camera.padding, device, p.batch_size, shape,
                                         cfg.segment if p.auto_masks else None)
    out = Path(p.out) if p.out else Path(p.data) / PREDICTIONS_FILE
    save_torch(out, predictions)
    trusted = sum(v["pred_pose_overlay_iou"] > TRUSTED_IOU for v in predictions.values())
    log.info("wrote %d cameras to %s (%d with overlay IoU > %.1f)", len(predictions), out, trusted, TRUSTED_IOU)


if __name__ == "__main__":
    main()
