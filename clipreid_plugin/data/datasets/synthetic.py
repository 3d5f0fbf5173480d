"""SyntheticReID: procedurally drawn people in the Market-1501 layout, generated on first use.

Identity lives in clothing colours, body proportions, a bag and a logo; cameras change the
background, lighting, colour cast and blur; every image also varies in scale, position,
pose, mirroring and sometimes an occluding object. The task is a small but real retrieval
problem: raw pixels or an untrained network retrieve poorly, a trained model much better.

The folder is written once into ``<ROOT>/SyntheticReID/`` (generated in a temporary folder
and renamed, so concurrent processes never see a half-written dataset) and then parsed by
the Market-1501 parser like any real dataset.
"""

import json
import logging
import os
import random
import shutil
import tempfile
from typing import Dict, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from clipreid_plugin.config.configurable import configurable

from .bases import DatasetError, register_dataset
from .market1501 import Market1501

__all__ = ["SyntheticReID", "generate_synthetic_reid"]

logger = logging.getLogger(__name__)

_PALETTE = [(200, 30, 30), (30, 60, 200), (40, 160, 50), (230, 200, 40), (240, 240, 240),
            (25, 25, 25), (130, 70, 30), (150, 40, 170), (250, 130, 20), (120, 120, 120),
            (30, 170, 190), (240, 150, 180)]
_SKIN = [(255, 220, 185), (225, 180, 140), (170, 120, 80), (110, 70, 45)]
META_FILE = "synthetic_meta.json"


def _jitter(rng: random.Random, colour, amount: int = 18):
    return tuple(int(min(255, max(0, c + rng.randint(-amount, amount)))) for c in colour)


def _identity(seed: int, key: str) -> Dict:
    """Appearance of one identity (deterministic from the seed and the identity key)."""
    rng = random.Random(f"synthetic-reid/{seed}/id/{key}")
    return {
        "shirt": _jitter(rng, rng.choice(_PALETTE)),
        "trousers": _jitter(rng, rng.choice(_PALETTE)),
        "shoes": _jitter(rng, rng.choice(_PALETTE[4:6] + _PALETTE[6:7])),
        "hair": _jitter(rng, rng.choice([(20, 20, 20), (90, 50, 20), (200, 170, 90), (160, 160, 160)])),
        "skin": rng.choice(_SKIN),
        "head_r": rng.uniform(5.5, 8.5),
        "torso_w": rng.uniform(15, 25),
        "torso_h": rng.uniform(30, 42),
        "leg_w": rng.uniform(5, 8),
        "long_sleeves": rng.random() < 0.5,
        "bag": rng.choice(["none", "left", "right", "backpack"]),
        "bag_colour": _jitter(rng, rng.choice(_PALETTE)),
        "logo": rng.choice(["none", "circle", "square", "stripe"]),
        "logo_colour": _jitter(rng, rng.choice(_PALETTE)),
    }


def _camera(seed: int, cam: int) -> Dict:
    """Viewing conditions of one camera."""
    rng = random.Random(f"synthetic-reid/{seed}/cam/{cam}")
    return {
        "background": tuple(rng.randint(40, 220) for _ in range(3)),
        "gain": rng.uniform(0.65, 1.3),
        "cast": np.array([rng.uniform(0.8, 1.2) for _ in range(3)], dtype=np.float32),
        "blur": rng.choice([0.0, 0.0, 0.6, 1.0, 1.4]),
        "scale": rng.uniform(0.8, 1.0),
    }


def _draw(person: Dict, camera: Dict, rng: random.Random, size: Tuple[int, int]) -> Image.Image:
    """Render one image (height, width = ``size``) of ``person`` seen by ``camera``."""
    H, W = size
    # Draw on a fixed 128x64 design canvas, then resize to the requested size.
    img = Image.new("RGB", (64, 128), _jitter(rng, camera["background"], 25))
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(1, 4)):  # background clutter
        x0, y0 = rng.randint(-10, 60), rng.randint(-10, 120)
        d.rectangle([x0, y0, x0 + rng.randint(5, 30), y0 + rng.randint(5, 40)],
                    fill=_jitter(rng, camera["background"], 70))
    s = camera["scale"] * rng.uniform(0.85, 1.05)
    cx = 32 + rng.uniform(-5, 5)
    top = 6 + rng.uniform(-3, 6)
    mirror = rng.random() < 0.5

    def X(v):  # x offset from the body axis, mirrored for half of the images
        return cx + (-v if mirror else v) * s

    def Y(v):
        return top + v * s

    def B(x0, y0, x1, y1):  # bounding box in image coordinates (mirroring swaps x0 and x1)
        (xa, xb), (ya, yb) = sorted((X(x0), X(x1))), sorted((Y(y0), Y(y1)))
        return [xa, ya, xb, yb]

    p = person
    hr, tw, th, lw = p["head_r"], p["torso_w"], p["torso_h"], p["leg_w"]
    neck = 2 * hr
    legs_top, legs_bottom = neck + th, 112
    spread = rng.uniform(0, 6)
    if p["bag"] == "backpack":
        d.rectangle(B(-tw / 2 - 3, neck + 2, tw / 2 + 3, neck + th * 0.7),
                    fill=p["bag_colour"])
    for side in (-1, 1):  # legs, then shoes
        x_hip = side * (tw / 4)
        x_foot = x_hip + side * spread
        d.polygon([(X(x_hip - lw / 2), Y(legs_top)), (X(x_hip + lw / 2), Y(legs_top)),
                   (X(x_foot + lw / 2), Y(legs_bottom)), (X(x_foot - lw / 2), Y(legs_bottom))],
                  fill=p["trousers"])
        d.ellipse(B(x_foot - lw / 2 - 2, legs_bottom - 2, x_foot + lw / 2 + 3, legs_bottom + 4), fill=p["shoes"])
    d.rectangle(B(-tw / 2, neck, tw / 2, legs_top), fill=p["shirt"])
    arm = p["shirt"] if p["long_sleeves"] else p["skin"]
    for side in (-1, 1):
        d.rectangle(B(side * tw / 2, neck + 1, side * (tw / 2 + 4), neck + th * 0.85),
                    fill=arm)
    if p["logo"] == "circle":
        d.ellipse(B(-4, neck + 6, 4, neck + 14), fill=p["logo_colour"])
    elif p["logo"] == "square":
        d.rectangle(B(-4, neck + 6, 4, neck + 14), fill=p["logo_colour"])
    elif p["logo"] == "stripe":
        d.rectangle(B(-tw / 2, neck + th * 0.4, tw / 2, neck + th * 0.55),
                    fill=p["logo_colour"])
    if p["bag"] in ("left", "right"):
        side = -1 if p["bag"] == "left" else 1
        bx = side * (tw / 2 + 5)
        d.line([(X(side * tw / 4), Y(neck)), (X(bx), Y(neck + th * 0.6))], fill=p["bag_colour"], width=2)
        d.rectangle(B(bx - 5, neck + th * 0.6, bx + 5, neck + th * 0.9), fill=p["bag_colour"])
    d.ellipse(B(-hr, 0, hr, 2 * hr), fill=p["skin"])
    d.chord(B(-hr, 0, hr, 2 * hr), 180, 360, fill=p["hair"])
    if rng.random() < 0.25:  # an occluding object (car, post, another person's coat)
        if rng.random() < 0.5:
            y0 = rng.uniform(60, 100)
            d.rectangle([0, y0, 64, 128], fill=tuple(rng.randint(0, 255) for _ in range(3)))
        else:
            x0 = rng.uniform(-10, 40)
            d.rectangle([x0, 0, x0 + rng.uniform(12, 24), 128],
                        fill=tuple(rng.randint(0, 255) for _ in range(3)))
    arr = np.asarray(img, dtype=np.float32)
    arr = arr * camera["gain"] * rng.uniform(0.9, 1.1) * camera["cast"]
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 6, arr.shape)
    img = Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8))
    if camera["blur"] > 0:
        img = img.filter(ImageFilter.GaussianBlur(camera["blur"]))
    if (H, W) != (128, 64):
        img = img.resize((W, H), Image.BILINEAR)
    return img


def generate_synthetic_reid(out_dir: str, params: Dict) -> None:
    """Write a SyntheticReID dataset in the Market-1501 layout into ``out_dir``.

    Train ids are 1..N_train, test ids follow; each identity has ``images_per_id`` images
    cycling over a random permutation of the cameras. For each test id the first
    ``query_per_id`` images (distinct cameras) go to ``query/``, the rest to
    ``bounding_box_test/`` with ``num_distractors`` pid-0 images and ``num_junk`` pid -1
    images.

    Args:
        out_dir: destination folder (created).
        params: keys ``seed``, ``num_train_ids``, ``num_test_ids``, ``images_per_id``,
            ``query_per_id``, ``num_cameras``, ``num_distractors``, ``num_junk``, ``size``.
    """
    seed, ncam, size = params["seed"], params["num_cameras"], tuple(params["size"])
    folders = {k: os.path.join(out_dir, k) for k in ("bounding_box_train", "query", "bounding_box_test")}
    for f in folders.values():
        os.makedirs(f, exist_ok=True)
    cameras = {c: _camera(seed, c) for c in range(1, ncam + 1)}
    frame = 0

    def save(folder: str, pid_str: str, cam: int, idx: int, person: Dict, rng: random.Random):
        nonlocal frame
        frame += 1
        img = _draw(person, cameras[cam], rng, size)
        img.save(os.path.join(folder, f"{pid_str}_c{cam}s1_{frame:06d}_{idx:02d}.jpg"), quality=90)

    n_train, n_test = params["num_train_ids"], params["num_test_ids"]
    for pid in range(1, n_train + n_test + 1):
        person = _identity(seed, str(pid))
        rng = random.Random(f"synthetic-reid/{seed}/images/{pid}")
        cams = rng.sample(range(1, ncam + 1), ncam)
        for i in range(params["images_per_id"]):
            if pid <= n_train:
                folder = folders["bounding_box_train"]
            else:
                folder = folders["query"] if i < params["query_per_id"] else folders["bounding_box_test"]
            save(folder, f"{pid:04d}", cams[i % ncam], i, person, rng)
    rng = random.Random(f"synthetic-reid/{seed}/distractors")
    for i in range(params["num_distractors"]):
        save(folders["bounding_box_test"], "0000", rng.randint(1, ncam), i,
             _identity(seed, f"distractor-{i}"), rng)
    for i in range(params["num_junk"]):  # junk: background only (pid -1, dropped by the parser)
        junk = dict(_identity(seed, f"junk-{i}"), head_r=0.1, torso_w=0.1, torso_h=0.1, leg_w=0.1)
        save(folders["bounding_box_test"], "-1", rng.randint(1, ncam), i, junk, rng)
    with open(os.path.join(out_dir, META_FILE), "w") as f:
        json.dump(params, f, indent=1, sort_keys=True)


@register_dataset()
class SyntheticReID(Market1501):
    """Built-in synthetic dataset in the Market-1501 layout (``<ROOT>/SyntheticReID/``).

    Generated on first use from the DATASETS.SYNTHETIC keys; an existing folder generated
    with other keys is an error (delete it to regenerate). Parsed by :class:`Market1501`.
    """

    kind = "person"
    dataset_dirs = ("SyntheticReID",)
    max_pid = 9999
    max_cam = 9

    @configurable
    def __init__(self, root: str, seed: int = 0, num_train_ids: int = 40, num_test_ids: int = 30,
                 images_per_id: int = 8, query_per_id: int = 2, num_cameras: int = 5,
                 num_distractors: int = 20, num_junk: int = 5, size=(128, 64)):
        """
        Args:
            root: DATASETS.ROOT_DIR; the data go to ``root/SyntheticReID``.
            seed: generation seed.
            num_train_ids / num_test_ids: identities in the train / test split.
            images_per_id: images of each identity.
            query_per_id: images of each test identity put in ``query/`` (distinct cameras).
            num_cameras: 2..9 cameras.
            num_distractors / num_junk: gallery images with pid 0 / pid -1.
            size: (height, width) of the JPEG files.
        """
        params = dict(seed=seed, num_train_ids=num_train_ids, num_test_ids=num_test_ids,
                      images_per_id=images_per_id, query_per_id=query_per_id,
                      num_cameras=num_cameras, num_distractors=num_distractors,
                      num_junk=num_junk, size=[int(size[0]), int(size[1])])
        self._check(params)
        self._ensure_generated(os.path.abspath(root), params)
        super().__init__(root)

    @classmethod
    def from_config(cls, cfg) -> Dict:
        """Build from DATASETS.ROOT_DIR and the DATASETS.SYNTHETIC keys."""
        s = cfg.DATASETS.SYNTHETIC
        return {"root": cfg.DATASETS.ROOT_DIR, "seed": s.SEED, "num_train_ids": s.NUM_TRAIN_IDS,
                "num_test_ids": s.NUM_TEST_IDS, "images_per_id": s.IMAGES_PER_ID, "query_per_id": s.QUERY_PER_ID,
                "num_cameras": s.NUM_CAMERAS, "num_distractors": s.NUM_DISTRACTORS, "num_junk": s.NUM_JUNK,
                "size": s.SIZE}

    @staticmethod
    def _check(p: Dict) -> None:
        problems = []
        if not 2 <= p["num_cameras"] <= 9:
            problems.append(f"NUM_CAMERAS={p['num_cameras']} must be in 2..9")
        if not 1 <= p["query_per_id"] < min(p["images_per_id"], p["num_cameras"]):
            problems.append(f"QUERY_PER_ID={p['query_per_id']} must be >= 1 and below both "
                            f"IMAGES_PER_ID={p['images_per_id']} and NUM_CAMERAS={p['num_cameras']}")
        if p["num_train_ids"] < 1 or p["num_test_ids"] < 1:
            problems.append("NUM_TRAIN_IDS and NUM_TEST_IDS must be >= 1")
        if p["num_train_ids"] + p["num_test_ids"] > 9999:
            problems.append("NUM_TRAIN_IDS + NUM_TEST_IDS must be <= 9999")
        if problems:
            raise DatasetError("DATASETS.SYNTHETIC: " + "; ".join(problems) + ".")

    def _ensure_generated(self, root: str, params: Dict) -> None:
        final = os.path.join(root, self.dataset_dirs[0])
        meta = os.path.join(final, META_FILE)
        if not os.path.isdir(final):
            os.makedirs(root, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=".SyntheticReID.tmp-", dir=root)
            try:
                logger.info(f"Generating SyntheticReID into {final} ...")
                generate_synthetic_reid(tmp, params)
                os.rename(tmp, final)  # atomic; fails if another process finished first
            except OSError:
                if not os.path.isfile(meta):
                    raise
            finally:
                if os.path.isdir(tmp):
                    shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.isfile(meta):
            raise DatasetError(f"{final} exists but has no {META_FILE}: it was not generated by "
                               f"SyntheticReID. Delete or rename it.")
        with open(meta) as f:
            existing = json.load(f)
        if existing != params:
            diff = {k: (existing.get(k), v) for k, v in params.items() if existing.get(k) != v}
            raise DatasetError(f"{final} was generated with other DATASETS.SYNTHETIC values "
                               f"(existing, requested): {diff}. Delete the folder to regenerate, "
                               f"or set DATASETS.ROOT_DIR to another folder.")
