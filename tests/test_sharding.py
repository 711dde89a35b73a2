"""Inversion sharded over processes by torchrun (meshinv/inversion/run.py, output.py,
meshinv/utils/distributed.py): 2 gloo processes on CPU give exactly one process's results, the
summary accounts for every image once, a killed rank's images are done by a rerun, and a second,
unrelated job is still refused by the output folder's lock (on every rank, without a hang).

Each image's result is independent of the others (its z candidates come from the seed, its camera
noise from the seed and its id), so a process's shard makes the same results as one process does,
as long as the batches are the same: float rounding of batched ops differs with the batch's size
and make-up, so both sides run with batch_size 1 and the results are compared with torch.equal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from conftest import REPO_ROOT, output_lock_holder
from meshinv.data.sample import DataError
from meshinv.inversion import OutputFolder, load_record
from meshinv.models import ConvMeshGenerator, save_generator_checkpoint
from meshinv.utils.io import save_json
from test_inversion_job import disc_sample, job_config, make_run

IMAGES = [f"img{i}" for i in range(8)]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> Path:
    """A folder of 8 different photos with masks and cameras, and a tiny prior."""
    root = tmp_path_factory.mktemp("sharding")
    (root / "data" / "images").mkdir(parents=True)
    (root / "data" / "masks").mkdir()
    annotations = {}
    for i, stem in enumerate(IMAGES):
        box = (10 + i, 12 + (i * 3) % 7, 36 + (i * 5) % 9, 34 + i % 4)
        photo = Image.new("RGB", (48, 48), (40 + 20 * i, 120, 200 - 15 * i))
        ImageDraw.Draw(photo).ellipse(box, fill=(200, 60 + 10 * i, 30))
        photo.save(root / "data" / "images" / f"{stem}.png")
        mask = Image.new("L", (48, 48))
        ImageDraw.Draw(mask).ellipse(box, fill=255)
        mask.save(root / "data" / "masks" / f"{stem}.png")
        angle = 0.3 * i
        annotations[stem] = {"class_id": i % 8, "camera": {
            "scale": 14.0, "translation": [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2],
            "quaternion": [float(torch.cos(torch.tensor(angle))), 0.0, float(torch.sin(torch.tensor(angle))), 0.0]}}
    (root / "data" / "annotations.json").write_text(json.dumps(annotations))
    torch.manual_seed(0)
    generator = ConvMeshGenerator(latent_dim=8, n_classes=8, texture_resolution=128, width_multiplier=0.0625).eval()
    save_generator_checkpoint(root / "prior.pt", generator)
    return root


def invert_args(job: Path, out: Path) -> list[str]:
    """A few milliseconds per image: 3 z candidates, 3 steps, no VGG or turntable; the dataset's
    camera perturbed per image as the start (seeded by the image id)."""
    settings = ["device=cpu", "model.latent_dim=8", "inversion.crop.img_size=32", "inversion.select_num=3",
                "inversion.init_batch_size=3", "inversion.iterations=[3]", "inversion.z_lrs=[0.1]",
                "inversion.camera_lrs=[0.01]", "inversion.loss.feature_weight=0", "inversion.batch_size=1",
                "inversion.export.turntable_frames=0", "inversion.camera_init.predictor=null",
                "inversion.camera_init.use_dataset_camera=true"]
    return ["scripts/invert.py", "--config", "configs/synthetic.yaml", "--data", str(job / "data"), "--out", str(out),
            "--checkpoint", str(job / "prior.pt"), *[arg for s in settings for arg in ("--set", s)]]


def run(command: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def one_process(job) -> Path:
    out = job / "one_process"
    result = run([sys.executable, *invert_args(job, out)])
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def assert_same_results(out: Path, reference: Path) -> None:
    for image_id in IMAGES:
        ours, theirs = load_record(out / image_id), load_record(reference / image_id)
        for name in ("z", "camera", "camera_init", "texture", "mesh_map", "vertices"):
            assert torch.equal(getattr(ours, name), getattr(theirs, name)), (image_id, name)
        assert (ours.iou, ours.losses, ours.init_loss, ours.class_id, ours.camera_source) == \
               (theirs.iou, theirs.losses, theirs.init_loss, theirs.class_id, theirs.camera_source), image_id


def assert_complete_summary(out: Path, reference: Path) -> None:
    """summary.json accounts for every image once, as one process's does (but for the times), and
    no rank's part is left."""
    summary, expected = (json.loads((folder / "summary.json").read_text()) for folder in (out, reference))
    assert list(summary["images"]) == IMAGES and summary["done"] == len(IMAGES) and summary["failed"] == 0
    for entries in (summary["images"], expected["images"]):
        for entry in entries.values():
            entry.pop("seconds")
    assert summary["images"] == expected["images"] and summary["mean_iou"] == expected["mean_iou"]
    assert OutputFolder(out).part_files("summary.json") == []


def test_two_processes_give_exactly_the_results_of_one(job, one_process):
    out = job / "two_processes"
    result = run([*TORCHRUN, *invert_args(job, out)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_results(out, one_process)
    assert_complete_summary(out, one_process)
    # Each rank did its share (every other image still to do), logged with its rank, and rank 0
    # alone reported the job.
    assert "[rank 0/2]" in result.stderr and "[rank 1/2]" in result.stderr
    assert result.stderr.count("this process's shard: 4 of the 8 images to invert") == 2
    assert result.stdout.count("8 images reconstructed, 0 failed") == 1
    assert (out / "log.txt").is_file() and (out / "log.rank1.txt").is_file()


def _worker_of_rank(launcher: subprocess.Popen, rank: int) -> int:
    """The pid of torchrun's worker process of this rank (from /proc: its parent and environment)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            environment = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if parent == launcher.pid and f"RANK={rank}".encode() in environment:
            return int(stat.parent.name)
    raise AssertionError(f"no worker of rank {rank} under torchrun (pid {launcher.pid})")


def test_a_rerun_inverts_the_images_of_a_killed_rank(job, one_process):
    out = job / "killed"
    launcher = subprocess.Popen([*TORCHRUN, *invert_args(job, out)], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 240
        while not OutputFolder(out).finished_ids() and launcher.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert launcher.poll() is None, "the job ended before any result was written"
        os.kill(_worker_of_rank(launcher, 1), signal.SIGKILL)  # torchrun then stops rank 0 too
        launcher.communicate(timeout=120)
    finally:
        launcher.kill()
        launcher.wait()
    assert launcher.returncode != 0
    finished = OutputFolder(out).finished_ids()
    assert 0 < len(finished) < len(IMAGES)  # both ranks had 4 images to do; the first result stopped them
    result = run([*TORCHRUN, *invert_args(job, out)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{len(IMAGES)} images selected: {len(finished)} already done, {len(IMAGES) - len(finished)} to invert" \
        in result.stderr
    assert_same_results(out, one_process)
    assert_complete_summary(out, one_process)


def test_another_job_is_refused_on_every_rank(job):
    out = job / "held"
    with output_lock_holder(out) as holder:
        result = run([*TORCHRUN, *invert_args(job, out)], timeout=200)
    assert result.returncode != 0
    for rank in (0, 1):
        assert f"[rank {rank}/2]" in result.stderr
    assert result.stderr.count(f"the output folder {out} is in use by another inversion run (pid {holder.pid}") == 2
    assert not OutputFolder(out).finished_ids() and not (out / "settings.json").exists()


def test_the_ranks_files_cannot_be_image_folders(tmp_path):
    for name in ("summary.rank0.json", "summary.rank12.json", "log.rank1.txt"):
        with pytest.raises(DataError, match="one of the run's own files"):
            OutputFolder(tmp_path).result_folder(name)
    OutputFolder(tmp_path).result_folder("summary.rank1")  # not one of them


def test_one_process_folds_in_the_parts_a_killed_sharded_run_left(tmp_path):
    out = tmp_path / "out"
    items = {"a": disc_sample("a"), "b": disc_sample("b"), "c": disc_sample("c")}
    make_run(job_config(out, limit=1), items).run(progress=False)
    # A 2-process job killed after its rank 1 had recorded a failure and finished an image: neither
    # is in summary.json.
    make_run(job_config(out / "elsewhere", image_ids=["c"]), items).run(progress=False)
    (out / "elsewhere" / "c").rename(out / "c")
    save_json(out / "summary.rank1.json", {"images": {"b": {"status": "failed", "reason": "rank 1's failure"}}})
    summary = make_run(job_config(out, limit=1), items).run(progress=False)
    assert summary["images"]["b"] == {"status": "failed", "reason": "rank 1's failure"}
    assert summary["images"]["c"]["status"] == "done" and summary["done"] == 2
    assert json.loads((out / "summary.json").read_text()) == summary
    assert OutputFolder(out).part_files("summary.json") == []
