"""CUB and PASCAL3D+ loaders on tiny trees in the real file formats (CMR .mat structs, CUB text
files, the original's predicted masks and camera predictions), open_dataset, and check_dataset."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from conftest import REPO_ROOT
from meshinv.data import DataError
from meshinv.data.camera_predictions import load_cmr_predicted_cameras, select_camera
from meshinv.data.cub import CUB_KEYPOINT_PERMUTATION, CUBDataset, cub_class_names
from meshinv.data.datasets import DATASET_KINDS, detect_kind, kind_info, open_dataset
from meshinv.data.info import DatasetInfo
from meshinv.data.inspect import inspect_dataset
from meshinv.data.folder import FolderDataset
from meshinv.data.p3d import P3DDataset, p3d_cad_mesh
from meshinv.data.preprocess import CropConfig, mirror_ndc_camera
from meshinv.geometry.camera import WeakPerspectiveCamera, quaternion_to_matrix

SIZE = 32
CROP = CropConfig(img_size=SIZE)


# -- building trees -----------------------------------------------------------------------------------

def symmetric_shape(rng, perm: np.ndarray) -> np.ndarray:
    """(3, K) points whose mirror image (x -> -x) is the same set relabelled by `perm`."""
    points = rng.uniform(-0.6, 0.6, size=(3, len(perm)))
    for k, j in enumerate(perm):
        if j == k:
            points[0, k] = 0.0
        elif j > k:
            points[:, j] = points[:, k] * np.array([-1.0, 1.0, 1.0])
    return points


def random_rotation(rng) -> np.ndarray:
    q = torch.from_numpy(rng.normal(size=4))
    return quaternion_to_matrix(q).numpy()


def struct_array(records: list[dict]) -> np.ndarray:
    """A MATLAB struct array for scipy.io.savemat (nested dicts become structs)."""
    out = np.zeros((1, len(records)), dtype=[(name, object) for name in records[0]])
    for i, record in enumerate(records):
        for name, value in record.items():
            out[0, i][name] = value
    return out


def make_instance(rng, shape: np.ndarray, height: int, width: int, trans: tuple[int, int], hidden=()):
    """An image with a red 3x3 block where the object origin projects, its mask, box, parts, SfM.

    Coordinates are CMR's: 1-based pixel indices, so the origin projects onto 1-based pixel
    `trans`, i.e. 0-based row trans[1] - 1, column trans[0] - 1."""
    rot, scale = random_rotation(rng), 9.0
    parts_xy = scale * (rot @ shape)[:2] + np.array(trans, float)[:, None]
    visible = np.ones(shape.shape[1])
    visible[list(hidden)] = 0
    parts = np.vstack([parts_xy * visible, visible])
    image = np.full((height, width, 3), 0.6, np.float32)
    image[..., 2] = np.linspace(0.2, 0.8, width)[None]
    row, col = trans[1] - 1, trans[0] - 1
    image[row - 1:row + 2, col - 1:col + 2] = (1.0, 0.0, 0.0)
    x0, x1 = int(np.floor(parts_xy[0].min())) - 2, int(np.ceil(parts_xy[0].max())) + 2   # 1-based
    y0, y1 = int(np.floor(parts_xy[1].min())) - 2, int(np.ceil(parts_xy[1].max())) + 2
    mask = np.zeros((height, width), bool)
    mask[y0 - 1:y1, x0 - 1:x1] = True
    record = {"bbox": {"x1": float(x0), "y1": float(y0), "x2": float(x1), "y2": float(y1)},
              "parts": parts, "mask": mask, "width": float(width), "height": float(height)}
    sfm = {"rot": rot, "scale": scale, "trans": np.array(trans, float)[:, None]}
    return image, record, sfm


def save_png(path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image * 255).round().astype(np.uint8)).save(path, format="PNG")  # exact pixels, any suffix


CUB_SPLIT_IDS = {"train": [1, 2, 3], "testval": [4, 5, 6], "test": [4, 5], "val": [5, 6]}
CUB_CLASSES = {1: 1, 2: 1, 3: 17, 4: 17, 5: 200, 6: 3}  # 1-based, as image_class_labels.txt


def cub_rel_path(image_id: int) -> str:
    cls = CUB_CLASSES[image_id]
    return f"{cls:03d}.Bird_{cls}/Bird_{cls}_{image_id:04d}_{100 + image_id}.jpg"


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cub")
    rng = np.random.default_rng(0)
    shape = symmetric_shape(rng, CUB_KEYPOINT_PERMUTATION)
    cub = root / "CUB_200_2011"
    records, sfms = {}, {}
    for image_id in range(1, 7):
        height, width = 44 + 2 * image_id, 60 - image_id
        image, record, sfm = make_instance(rng, shape, height, width, (28 + image_id, 22 + image_id // 2),
                                           hidden=(2, 9) if image_id == 4 else ())
        save_png(cub / "images" / cub_rel_path(image_id), image)
        record.update(id=float(image_id), rel_path=cub_rel_path(image_id), train=float(image_id <= 3),
                      test=float(image_id > 3), class_id=float(CUB_CLASSES[image_id]))
        records[image_id], sfms[image_id] = record, sfm
    (cub / "images.txt").write_text("".join(f"{i} {cub_rel_path(i)}\n" for i in range(1, 7)))
    (cub / "image_class_labels.txt").write_text("".join(f"{i} {CUB_CLASSES[i]}\n" for i in range(1, 7)))
    (cub / "train_test_split.txt").write_text("".join(f"{i} {int(i <= 3)}\n" for i in range(1, 7)))
    (cub / "bounding_boxes.txt").write_text("".join(f"{i} 1.0 1.0 10.0 10.0\n" for i in range(1, 7)))
    (root / "cache" / "data").mkdir(parents=True)
    (root / "cache" / "sfm").mkdir(parents=True)
    hull = np.array([[1, 2, 3], [1, 3, 4], [2, 3, 4]], float)
    for split, ids in CUB_SPLIT_IDS.items():
        scipy.io.savemat(root / "cache" / "data" / f"{split}_cub_cleaned.mat",
                         {"images": struct_array([records[i] for i in ids])})
        scipy.io.savemat(root / "cache" / "sfm" / f"anno_{split}.mat",
                         {"sfm_anno": struct_array([sfms[i] for i in ids]), "S": shape, "conv_tri": hull})
    # Predicted masks of the test split (index = position in test_cub_cleaned.mat): a small square.
    (root / "predicted_mask").mkdir()
    for index, image_id in enumerate(CUB_SPLIT_IDS["test"]):
        mask = np.zeros_like(records[image_id]["mask"], dtype=np.float32)
        rows, cols = np.nonzero(records[image_id]["mask"])
        mask[rows.min():rows.min() + 6, cols.min():cols.min() + 6] = 1.0
        np.save(root / "predicted_mask" / f"{index}.npy", mask)
    torch.save({"Bird_1_0004_104": {"pred_cam": torch.tensor([0.5, 0.1, -0.1, 1.0, 0.0, 0.0, 0.0]),
                                    "pred_pose_overlay_iou": 0.8},
                "Bird_200_0005_105": {"pred_cam": torch.ones(7), "pred_pose_overlay_iou": torch.tensor(0.5)}},
               root / "cache" / "cmr_pred_cam.pth")
    return root, torch.from_numpy(shape.T.astype(np.float32))


P3D_PERM = np.array([2, 1, 4, 3, 5, 6, 8, 7]) - 1   # 8 toy keypoints: pairs (1,2), (3,4), (7,8)
# (rel_path as CMR stores it, voc_image_id, voc_rec_id, cad_index 1-based, split)
P3D_ENTRIES = [("car_imagenet\\n02814533_11.JPEG", "n02814533_11", 1, 2, "train"),
               ("car_imagenet\\n02814533_12.JPEG", "n02814533_12", 1, 1, "train"),
               ("car_pascal\\2008_000001.jpg", "2008_000001", 1, 3, "train"),
               ("car_pascal\\2008_000002.jpg", "2008_000002", 1, 2, "val"),
               ("car_pascal\\2008_000002.jpg", "2008_000002", 2, 1, "val")]


@pytest.fixture(scope="module")
def p3d_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("p3d")
    rng = np.random.default_rng(1)
    shape = symmetric_shape(rng, P3D_PERM)
    release = root / "PASCAL3D+_release1.1"
    records, sfms, images = [], [], {}
    for rel_path, voc_id, rec_id, cad, split in P3D_ENTRIES:
        image, record, sfm = make_instance(rng, shape, 50, 100, (25 + 45 * (rec_id - 1), 26))
        if rel_path in images:  # a second car in the same photo: add its marker to the first's image
            image = np.where((image == (1.0, 0.0, 0.0)).all(-1, keepdims=True), image, images[rel_path])
        images[rel_path] = image
        save_png(release / "Images" / rel_path.replace("\\", "/"), image)
        record.update(rel_path=rel_path, voc_image_id=voc_id, voc_rec_id=float(rec_id), cad_index=float(cad),
                      is_train=float(split == "train"))
        records.append((split, record))
        sfms.append(sfm)
    (root / "data").mkdir()
    (root / "sfm").mkdir()
    for split in ("train", "val", "all"):
        chosen = [i for i, (s, _) in enumerate(records) if split in (s, "all")]
        scipy.io.savemat(root / "data" / f"car_{split}.mat", {"images": struct_array([records[i][1] for i in chosen])})
        scipy.io.savemat(root / "sfm" / f"car_{split}.mat",
                         {"sfm_anno": struct_array([sfms[i] for i in chosen]), "S": shape})
    names = np.array(["L_F_wheel", "R_F_wheel", "L_B_wheel", "R_B_wheel", "roof", "hood", "L_mirror", "R_mirror"],
                     dtype=object)
    scipy.io.savemat(root / "data" / "car_kps.mat", {"kp_perm_inds": (P3D_PERM + 1).astype(float)[:, None],
                                                     "kp_names": names})
    cads = [{"vertices": rng.normal(size=(4 + k, 3)), "faces": np.array([[1, 2, 3], [2, 3, 4]], float)}
            for k in range(3)]
    (release / "CAD").mkdir()
    scipy.io.savemat(release / "CAD" / "car.mat", {"car": struct_array(cads)})
    (root / "p3d_labels.csv").write_text("filename,color1,color2,shape,extra\n"
                                         "n02814533_11.JPEG,red,none,sedan,x\n"
                                         "n02814533_12.JPEG,blue,white,suv,x\n")
    return root, torch.from_numpy(shape.T.astype(np.float32)), cads


# -- checks ---------------------------------------------------------------------------------------------

def project(camera: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    return WeakPerspectiveCamera.from_tensor(camera[None]).project(points[None])[0]


def red_centroid(image: torch.Tensor) -> torch.Tensor:
    """Continuous pixel (x, y) of the red block's centre in a (3, S, S) image in [-1, 1]."""
    redness = (image[0] - image[1]).clamp(min=0)
    weights = torch.where(redness > 0.5 * redness.max(), redness, torch.zeros_like(redness))
    rows, cols = torch.meshgrid(torch.arange(image.shape[1]) + 0.5, torch.arange(image.shape[2]) + 0.5, indexing="ij")
    return torch.stack([(weights * cols).sum(), (weights * rows).sum()]) / weights.sum()


def ndc_to_pixel(xy: torch.Tensor, size: int) -> torch.Tensor:
    return torch.stack([(xy[0] + 1) * size / 2, (1 - xy[1]) * size / 2])


def test_cub_splits_classes_and_ids(cub_root):
    root, _ = cub_root
    for split, ids in CUB_SPLIT_IDS.items():
        dataset = CUBDataset(root, CROP, split=split)
        assert len(dataset) == len(ids)
        assert dataset.image_ids() == [cub_rel_path(i).split("/")[-1][:-4] for i in ids]
    sample = CUBDataset(root, CROP, split="test")[1]
    assert sample.class_id == CUB_CLASSES[5] - 1 == 199
    assert sample.image_id == "Bird_200_0005_105" and sample.source.endswith(cub_rel_path(5))
    assert sample.image.shape == (3, SIZE, SIZE) and sample.mask.shape == (1, SIZE, SIZE)
    assert sample.image.min() >= -1 and sample.image.max() <= 1
    assert set(sample.mask.unique().tolist()) <= {0.0, 1.0}
    assert sample.camera.shape == (7,) and sample.gt["keypoints"].shape == (15, 3)


def test_cub_sfm_camera_lands_on_the_marked_pixel_and_keypoints(cub_root):
    root, shape = cub_root
    dataset = CUBDataset(root, CROP, split="train")
    for sample in dataset:
        # The object origin projects to the red block's centre (within a pixel of the crop).
        origin = project(sample.camera, torch.zeros(1, 3))[0]
        assert torch.allclose(ndc_to_pixel(origin, SIZE), red_centroid(sample.image), atol=1.0)
        # The SfM camera reproduces the annotated keypoints it was fitted to.
        keypoints = sample.gt["keypoints"]
        assert torch.allclose(project(sample.camera, shape), keypoints[:, :2], atol=1e-4)
        # The mask covers the box that was cropped (padding 5%: a margin on the long side).
        assert sample.mask[0, SIZE // 2].sum() > 0


def test_cub_hidden_keypoints_are_zero(cub_root):
    root, _ = cub_root
    keypoints = CUBDataset(root, CROP, split="test")[0].gt["keypoints"]  # image 4 hides keypoints 3 and 10
    assert keypoints[[2, 9]].abs().sum() == 0 and keypoints[:, 2].sum() == 13


def test_cub_mirror_swaps_keypoints_and_mirrors_camera(cub_root):
    root, shape = cub_root
    plain, mirrored = CUBDataset(root, CROP, split="test")[0], CUBDataset(root, CROP, split="test", mirror=True)[0]
    assert torch.equal(mirrored.image, plain.image.flip(-1)) and torch.equal(mirrored.mask, plain.mask.flip(-1))
    assert torch.allclose(mirrored.camera, mirror_ndc_camera(plain.camera))
    expected = plain.gt["keypoints"][CUB_KEYPOINT_PERMUTATION] * torch.tensor([-1.0, 1.0, 1.0])
    assert torch.allclose(mirrored.gt["keypoints"], expected)
    # A symmetric mean shape seen by the mirrored camera matches the swapped keypoints.
    visible = mirrored.gt["keypoints"][:, 2] > 0
    assert torch.allclose(project(mirrored.camera, shape)[visible], mirrored.gt["keypoints"][visible, :2], atol=1e-4)


def test_cub_predicted_masks(cub_root):
    root, _ = cub_root
    annotated = CUBDataset(root, CROP, split="test")[1]
    predicted = CUBDataset(root, CROP, split="test", use_predicted_mask=True)[1]
    assert torch.equal(predicted.gt["annotated_mask"], annotated.mask)
    assert 0 < predicted.mask.sum() < annotated.mask.sum()
    assert torch.equal(predicted.camera, annotated.camera)
    with pytest.raises(DataError, match="predicted-mask folder"):
        CUBDataset(root, CROP, split="test", use_predicted_mask=True, predicted_mask_dir=root / "nowhere")
    with pytest.raises(DataError, match=r"predicted_mask[/\\]2\.npy"):
        CUBDataset(root, CROP, split="train", use_predicted_mask=True)[2]


def test_cmr_predicted_cameras(cub_root, tmp_path):
    root, _ = cub_root
    predictions = load_cmr_predicted_cameras(root / "cache" / "cmr_pred_cam.pth")
    assert set(predictions) == {"Bird_1_0004_104", "Bird_200_0005_105"}
    sfm = torch.zeros(7)
    camera, source = select_camera(sfm, predictions["Bird_1_0004_104"])
    assert source == "prediction" and torch.allclose(camera, torch.tensor([0.5, 0.1, -0.1, 1.0, 0.0, 0.0, 0.0]))
    assert select_camera(sfm, predictions["Bird_200_0005_105"]) == (sfm, "dataset")  # IoU 0.5 <= 0.7
    assert select_camera(sfm, None) == (sfm, "dataset")
    numpy_file = tmp_path / "numpy.pth"
    torch.save({"a": {"pred_cam": np.zeros(7), "pred_pose_overlay_iou": 1.0}}, numpy_file)
    with pytest.raises(DataError, match="trusted"):
        load_cmr_predicted_cameras(numpy_file)
    assert load_cmr_predicted_cameras(numpy_file, trusted=True)["a"].camera.shape == (7,)
    bad = tmp_path / "bad.pth"
    torch.save({"a": {"pred_cam": torch.zeros(6), "pred_pose_overlay_iou": 1.0}}, bad)
    with pytest.raises(DataError, match=r"bad\.pth.*7"):
        load_cmr_predicted_cameras(bad)


def test_the_predictions_writer_and_reader_share_one_format(tmp_path):
    """The camera trainer's entries (prediction_entry) are what inversion's reader takes."""
    from meshinv.data.camera_predictions import PREDICTIONS_FILE, prediction_entry
    from meshinv.utils.io import save_torch

    camera = torch.tensor([0.5, 0.1, -0.1, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64, requires_grad=True)
    save_torch(tmp_path / PREDICTIONS_FILE, {"a": prediction_entry(camera, 0.75), "b": prediction_entry(camera, 0.7)})
    predictions = load_cmr_predicted_cameras(tmp_path / PREDICTIONS_FILE)
    assert torch.equal(predictions["a"].camera, camera.detach().float()) and predictions["a"].overlay_iou == 0.75
    assert select_camera(None, predictions["a"])[1] == "prediction"
    assert select_camera(None, predictions["b"])[1] == "dataset"  # trusted only above the threshold


def test_cub_errors_name_the_file(cub_root, tmp_path):
    root, _ = cub_root
    with pytest.raises(DataError, match="no split 'tset'"):
        CUBDataset(root, CROP, split="tset")
    broken = tmp_path / "cub"
    (broken / "cache" / "data").mkdir(parents=True)
    (broken / "cache" / "sfm").mkdir(parents=True)
    (broken / "CUB_200_2011" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match=r"test_cub_cleaned\.mat: file not found"):
        CUBDataset(broken, CROP)
    images = struct_array([{"rel_path": "a/b.jpg", "bbox": {"x1": 1.0, "y1": 1.0, "x2": 5.0, "y2": 5.0},
                            "parts": np.zeros((3, 15))}])
    scipy.io.savemat(broken / "cache" / "data" / "test_cub_cleaned.mat", {"images": images})
    with pytest.raises(DataError, match=r"test_cub_cleaned\.mat: images\(1\) has no field mask"):
        CUBDataset(broken, CROP)
    scipy.io.savemat(broken / "cache" / "data" / "test_cub_cleaned.mat", {"pictures": images})
    with pytest.raises(DataError, match=r"test_cub_cleaned\.mat: no variable images"):
        CUBDataset(broken, CROP)
    # A malformed SfM rotation fails for that item only, naming the SfM file.
    data = scipy.io.loadmat(root / "cache" / "data" / "test_cub_cleaned.mat")
    scipy.io.savemat(broken / "cache" / "data" / "test_cub_cleaned.mat", {"images": data["images"]})
    sfm = struct_array([{"rot": 2 * np.eye(3), "scale": 1.0, "trans": np.zeros(2)},
                        {"rot": np.eye(3), "scale": 1.0, "trans": np.zeros(2)}])
    scipy.io.savemat(broken / "cache" / "sfm" / "anno_test.mat", {"sfm_anno": sfm})
    dataset = CUBDataset(broken, CROP)  # no CUB text files: class ids from the structs' class_id
    assert dataset.class_ids == [CUB_CLASSES[4] - 1, CUB_CLASSES[5] - 1]
    with pytest.raises(DataError, match=r"anno_test\.mat: sfm_anno\(1\)\.rot: not a rotation"):
        dataset[0]
    with pytest.raises(DataError, match=r"images[/\\]200\.Bird_200.*not found"):
        dataset[1]  # the image is not in this tree
    scipy.io.savemat(broken / "cache" / "sfm" / "anno_test.mat", {"sfm_anno": sfm[:, :1]})
    with pytest.raises(DataError, match=r"1 SfM cameras but .* has 2 images"):
        CUBDataset(broken, CROP)


def test_p3d_splits_subsets_ids_and_classes(p3d_root):
    root, _, _ = p3d_root
    assert len(P3DDataset(root, CROP, split="train")) == 3
    assert len(P3DDataset(root, CROP, split="all")) == 5
    assert len(P3DDataset(root, CROP, split="train", subset="imagenet")) == 2
    assert len(P3DDataset(root, CROP, split="all", subset="pascal")) == 3
    val = P3DDataset(root, CROP, split="val")
    assert val.image_ids() == ["2008_000002_1", "2008_000002_2"]  # two cars of one image
    assert [s.class_id for s in val] == [0, 0]
    assert [int(s.gt["cad_index"]) for s in val] == [1, 0]
    assert [s.class_id for s in P3DDataset(root, CROP, split="val", class_mode="cad")] == [1, 0]
    labelled = P3DDataset(root, CROP, split="train", class_mode="labels")
    assert [s.class_id for s in labelled] == [0, 1, -1]   # shapes sorted: sedan 0, suv 1; pascal unlisted
    assert labelled[1].gt["p3d_labels"].tolist() == [1, 0, 1]   # suv, blue, white
    assert labelled[0].source.endswith("car_imagenet/n02814533_11.JPEG")
    with pytest.raises(DataError, match="no split 'test'.*val"):
        P3DDataset(root, CROP, split="test")


def test_p3d_camera_keypoints_mirror_and_cad(p3d_root):
    root, shape, cads = p3d_root
    plain = P3DDataset(root, CROP, split="val")
    mirrored = P3DDataset(root, CROP, split="val", mirror=True)
    for a, b in zip(plain, mirrored):
        origin = project(a.camera, torch.zeros(1, 3))[0]
        assert torch.allclose(ndc_to_pixel(origin, SIZE), red_centroid(a.image), atol=1.0)
        assert torch.allclose(project(a.camera, shape), a.gt["keypoints"][:, :2], atol=1e-4)
        assert torch.allclose(b.gt["keypoints"], a.gt["keypoints"][P3D_PERM] * torch.tensor([-1.0, 1.0, 1.0]))
        assert torch.allclose(project(b.camera, shape), b.gt["keypoints"][:, :2], atol=1e-4)
    vertices, faces = plain.cad_mesh(int(plain[0].gt["cad_index"]))
    assert torch.allclose(vertices, torch.from_numpy(cads[1]["vertices"]).float())
    assert faces.tolist() == [[0, 1, 2], [1, 2, 3]]
    assert p3d_cad_mesh(root, 2)[0].shape == (6, 3)
    with pytest.raises(DataError, match=r"car\.mat: no CAD model 3"):
        plain.cad_mesh(3)


def test_p3d_errors_name_the_file(p3d_root, tmp_path):
    root, _, cads = p3d_root
    broken = tmp_path / "p3d"
    (broken / "PASCAL3D+_release1.1" / "Images").mkdir(parents=True)
    (broken / "PASCAL3D+_release1.1" / "CAD").mkdir()
    for sub in ("data", "sfm"):
        (broken / sub).mkdir()
        (broken / sub / "car_val.mat").write_bytes((root / sub / "car_val.mat").read_bytes())
    assert len(P3DDataset(broken, CROP)) == 2   # no car_kps.mat: fine until mirroring
    with pytest.raises(DataError, match=r"car_kps\.mat: file not found \(mirroring"):
        P3DDataset(broken, CROP, mirror=True)
    with pytest.raises(DataError, match=r"p3d_labels\.csv: file not found"):
        P3DDataset(broken, CROP, class_mode="labels")
    bad = [{"vertices": cads[0]["vertices"], "faces": np.array([[1.0, 2.0, 99.0]])}]
    scipy.io.savemat(broken / "PASCAL3D+_release1.1" / "CAD" / "car.mat", {"car": struct_array(bad)})
    with pytest.raises(DataError, match=r"car\.mat: car\(1\)\.faces: indices outside"):
        P3DDataset(broken, CROP).cad_mesh(0)


def test_open_dataset_detects_each_kind(cub_root, p3d_root, tmp_path):
    assert isinstance(open_dataset(cub_root[0], CROP), CUBDataset)
    assert open_dataset(cub_root[0], CROP).split == "test"
    dataset = open_dataset(p3d_root[0], CROP, split="train", subset="imagenet")
    assert isinstance(dataset, P3DDataset) and len(dataset) == 2
    folder = tmp_path / "photos" / "test"
    save_png(folder / "images" / "a.png", np.zeros((8, 8, 3), np.float32))
    assert detect_kind(tmp_path / "photos", "test") == "folder"
    assert isinstance(open_dataset(tmp_path / "photos", CROP), FolderDataset)
    (folder / "gt").mkdir()
    assert detect_kind(tmp_path / "photos", "test") == "synthetic"
    assert type(open_dataset(tmp_path / "photos", CROP)).__name__ == "SyntheticDataset"
    with pytest.raises(DataError, match="no option subset"):
        open_dataset(cub_root[0], CROP, subset="imagenet")
    (tmp_path / "empty").mkdir()
    looked_for = r"empty: no dataset recognised; looked under it for CUB_200_2011/.*\(p3d\).*test/images/"
    with pytest.raises(DataError, match=looked_for):
        open_dataset(tmp_path / "empty", CROP)


def test_every_dataset_kind_reports_what_it_offers(cub_root, p3d_root, tmp_path):
    """DatasetInfo, asked by every consumer instead of class names or files: each kind's reader
    reports its kind and capabilities; a folder has cameras only when every image is annotated with one."""
    cub = open_dataset(cub_root[0], CROP).info
    assert cub == DatasetInfo("cub", has_cameras=True, has_3d_ground_truth=False, has_cad_models=False)
    assert cub.class_names == ()  # the toy tree's classes (1, 3, 17, 200) are not all of 0..K-1: unknown
    assert cub_class_names({"001.Black_footed_Albatross/a.jpg": 0, "002.Laysan_Albatross/b.jpg": 1}) == (
        "Black_footed_Albatross", "Laysan_Albatross")
    p3d = open_dataset(p3d_root[0], CROP)
    assert p3d.info == DatasetInfo("p3d", has_cameras=True, has_3d_ground_truth=False, has_cad_models=True,
                                   class_names=("car",))
    assert open_dataset(p3d_root[0], CROP, split="train", class_mode="labels").info.class_names == ("sedan", "suv")

    photos = tmp_path / "photos"
    for stem in ("a", "b"):
        save_png(photos / "test" / "images" / f"{stem}.png", np.zeros((8, 8, 3), np.float32))
    camera = {"scale": 4.0, "translation": [4.0, 4.0], "quaternion": [1.0, 0.0, 0.0, 0.0]}
    assert open_dataset(photos, CROP).info == DatasetInfo("folder", False, False, False)
    (photos / "test" / "annotations.json").write_text(json.dumps({"a": {"camera": camera}, "b": {"class_id": 1}}))
    assert not open_dataset(photos, CROP).info.has_cameras  # b has none
    (photos / "test" / "annotations.json").write_text(json.dumps({"a": {"camera": camera}, "b": {"camera": camera}}))
    assert open_dataset(photos, CROP).info == DatasetInfo("folder", True, False, False)
    (photos / "test" / "gt").mkdir()
    assert open_dataset(photos, CROP).info == DatasetInfo("synthetic", True, True, False)
    # What a kind promises before any folder is opened (the inspector's required files).
    assert {kind: kind_info(kind) for kind in DATASET_KINDS} == {
        "cub": DatasetInfo("cub", True, False, False), "p3d": DatasetInfo("p3d", True, False, True),
        "synthetic": DatasetInfo("synthetic", True, True, False), "folder": DatasetInfo("folder", False, False, False)}
    with pytest.raises(DataError, match="unknown dataset kind 'mnist'.*cub, p3d, synthetic, folder"):
        kind_info("mnist")


def load_check_dataset(monkeypatch):
    """The script as a module (in-process: no second interpreter start-up)."""
    spec = importlib.util.spec_from_file_location("check_dataset", REPO_ROOT / "scripts" / "check_dataset.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "check_dataset", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_check_dataset_reports_and_draws(cub_root, p3d_root, tmp_path, monkeypatch, capsys):
    script = load_check_dataset(monkeypatch)
    for kind, root in (("cub", cub_root[0]), ("p3d", p3d_root[0])):
        out = tmp_path / f"{kind}.png"
        monkeypatch.setattr(sys, "argv", ["check_dataset.py", "--dataset", kind, "--root", str(root),
                                          "--out", str(out), "--set", "image_size=48"])
        assert script.main() == 0
        text = capsys.readouterr().out
        assert "OK" in text and "samples per split" in text and out.is_file()
        assert Image.open(out).size[1] >= 48
    # A tree without the test split's SfM file is reported with the file's name.
    broken = tmp_path / "broken"
    for sub in ("CUB_200_2011", "cache/data"):
        (broken / sub).mkdir(parents=True)
    (broken / "cache" / "data" / "test_cub_cleaned.mat").write_bytes(b"not a mat file")
    monkeypatch.setattr(sys, "argv", ["check_dataset.py", "--dataset", "cub", "--root", str(broken)])
    assert script.main() == 1
    text = capsys.readouterr().out
    assert "PROBLEMS" in text and "anno_test.mat not found" in text and "images.txt: missing" in text


def test_check_dataset_refuses_an_unknown_kind_before_any_work(tmp_path, monkeypatch, capsys):
    script = load_check_dataset(monkeypatch)
    monkeypatch.setattr(sys, "argv", ["check_dataset.py", "--dataset", "mnist", "--root", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_status:
        script.main()
    assert exit_status.value.code == 2
    assert "dataset must be one of cub, p3d, synthetic, folder" in capsys.readouterr().err


def test_check_dataset_names_missing_images_and_bad_numbers(cub_root, tmp_path):
    """An optional split with image files missing is flagged and names them (not "absent"), a value in
    bounding_boxes.txt that is no number is found with its file and line, and the header says so."""
    root = tmp_path / "cub"
    shutil.copytree(cub_root[0], root)
    (root / "CUB_200_2011" / "images" / cub_rel_path(6)).unlink()  # only in the optional val / testval splits
    boxes = root / "CUB_200_2011" / "bounding_boxes.txt"
    boxes.write_text(boxes.read_text().replace("3 1.0 1.0 10.0 10.0", "3 1.0 one 10.0 10.0"))
    report = inspect_dataset("cub", root)
    checks = {c.what: c for c in report.checks}
    assert checks["split val"].status == "incomplete" and cub_rel_path(6) in checks["split val"].detail
    assert checks["split test"].status == "ok"
    assert checks["bounding_boxes.txt"].status == "malformed"
    assert f"{boxes}:3: 'one' is not a finite number" in checks["bounding_boxes.txt"].detail
    assert report.ok  # every required file is fine, so the dataset is usable ...
    header = report.text().splitlines()[0]
    assert "OK" != header.split(": ")[-1] and "PROBLEMS" in header  # ... but the header does not say OK
    assert "[!!] split val (optional): incomplete" in report.text()
