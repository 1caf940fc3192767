"""Decoy Fashion-MNIST: the one published explanation-guided-learning benchmark that runs offline here.

Every "right for the right reasons" paper (Ross et al. 2017, Teso & Kersting 2019, Schramowski et
al. 2020, Friedrich et al. 2023) builds its decoy data with one function, `augment()` in dtak/rrr
`rrr/decoy_mnist.py` (read at commit d83a16ee4a989ba47ef1b1a43acc5f528a899b1f). `add_decoy` below
follows that function, so numbers measured on our data can be set against the published ones.

The raw files come from Debian's `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist/`);
nothing is downloaded, unlike the reference, which fetches them on first use.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from megl.atomic import atomic_dir, write_bytes, write_json

from megl.data.records import DataError

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# The reference's decoy: a PATCH x PATCH square whose grey encodes the class as 255 - MULT * class.
PATCH = 4
MULT = 25
SIDE = 28  # Fashion-MNIST images are SIDE x SIDE
N_CLASSES = 10
_UBYTE = 0x08  # IDX type code of unsigned bytes, the only one the MNIST family uses


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file as a uint8 array of the shape its header declares.

    The reference reads the payload without looking at the header beyond its counts, so a truncated
    download silently gives a short array (or a reshape error far from the cause). Here every
    inconsistency between header and payload stops with the file's name in the message."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        if raw[:2] == b"\x1f\x8b":  # gzip magic: decide by content, not by the name
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # missing, unreadable, or a truncated/corrupt gzip stream
        raise DataError(f"{path}: cannot read IDX file ({exc})") from exc
    if len(raw) < 4:
        raise DataError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    zero, dtype, ndim = raw[:2], raw[2], raw[3]
    if zero != b"\x00\x00" or dtype != _UBYTE or ndim == 0:
        raise DataError(f"{path}: bad IDX magic number 0x{raw[:4].hex()} (expected 0x000008NN: unsigned bytes, NN dimensions)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: header declares {ndim} dimensions but the file ends after {len(raw)} bytes")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    got = len(raw) - header
    if got != expected:
        kind = "truncated" if got < expected else "trailing bytes"
        raise DataError(f"{path}: {kind}: header declares dims {dims} = {expected} bytes of data, file holds {got}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def load_fashion_mnist(root: str | Path = DEFAULT_ROOT) -> dict[str, np.ndarray]:
    """The four arrays, checked to fit together, so a wrong file fails here and not in training."""
    root = Path(root)
    out = {key: read_idx(root / name) for key, name in FILES.items()}
    for split in ("train", "test"):
        images, labels = out[f"{split}_images"], out[f"{split}_labels"]
        img_file, lab_file = root / FILES[f"{split}_images"], root / FILES[f"{split}_labels"]
        if images.ndim != 3:
            raise DataError(f"{img_file}: expected (N, rows, cols) images, header declares shape {images.shape}")
        if labels.ndim != 1:
            raise DataError(f"{lab_file}: expected (N,) labels, header declares shape {labels.shape}")
        if len(images) != len(labels):
            raise DataError(f"{lab_file}: {len(labels)} labels for {len(images)} images in {img_file}")
        if labels.size and labels.max() >= N_CLASSES:
            raise DataError(f"{lab_file}: label {int(labels.max())} outside 0..{N_CLASSES - 1}")
    return out


def patch_grey(classes: np.ndarray) -> np.ndarray:
    """The reference's class code: class 0 -> 255 down to class 9 -> 30."""
    return (255 - MULT * np.asarray(classes, dtype=np.int64)).astype(np.uint8)


def add_decoy(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, *, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Decoyed copies of `images` and the (N, H, W) bool masks of the patch pixels.

    Follows dtak/rrr rrr/decoy_mnist.py `augment()` (commit d83a16ee4a989ba47ef1b1a43acc5f528a899b1f):
    one 4x4 patch per image, its row side (top/bottom) and column side (left/right) each a fair
    coin; on train its grey is 255 - 25*y, so it alone predicts the label; on test the grey is that
    of a class drawn uniformly at random (`randomize=True`), so the shortcut is useless there. Other
    pixels are untouched. The mask is the "irrelevant" annotation that RRR penalises: all 16 patch
    pixels, also where the patch grey happens to equal the pixel it covers.

    Not bit-for-bit with the reference, which is not reproducible anyway (the legacy global
    np.random, unseeded in its notebook): it draws per image, interleaved (test: class, row coin,
    column coin; then the next image), with `np.random.rand() < 0.5` coins and
    `np.random.choice(range(10))`. Here the caller's Generator draws vectorised: on test all N
    classes (`integers(0, 10)`), then N row coins, then N column coins (`random() < 0.5`; True = top
    / left, the reference's `fwd` side); on train the class draw is absent. Same distribution,
    different stream. The reference's test class set is the classes seen in train; Fashion-MNIST
    has all ten, so it is 0..9 here."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"images must be uint8 (N, H, W), got {images.dtype} {images.shape}")
    n, h, w = images.shape
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    if h < PATCH or w < PATCH:
        raise ValueError(f"images of {h}x{w} cannot hold a {PATCH}x{PATCH} patch")
    if n and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise ValueError(f"labels must lie in 0..{N_CLASSES - 1}")
    classes = labels if train else rng.integers(0, N_CLASSES, size=n)
    top = rng.random(n) < 0.5
    left = rng.random(n) < 0.5
    rows = np.where(top[:, None], np.arange(h) < PATCH, np.arange(h) >= h - PATCH)
    cols = np.where(left[:, None], np.arange(w) < PATCH, np.arange(w) >= w - PATCH)
    masks = rows[:, :, None] & cols[:, None, :]
    out = images.copy()
    out[masks] = np.repeat(patch_grey(classes), PATCH * PATCH)  # masks are C-ordered: 16 per image
    return out, masks


# ---------------------------------------------------------------------------------------------
# DecoyFMNIST in the generic layout (params decoys.<name>, stage decoy@<name>)

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# Templated explanations (three per class), written here, not by annotators: they name what the
# garment itself shows and never the corner patch, so they are evidence for the object's pixels.
EXPLANATIONS = {
    "T-shirt/top": ("short sleeves and a round neckline", "a short top with no collar or buttons", "the sleeves end above the elbow"),
    "Trouser": ("two long separate legs", "a waistband over two straight legs", "long and narrow, split into two legs"),
    "Pullover": ("long sleeves and a closed front", "a knitted top with long sleeves and no opening", "long sleeves and a ribbed hem"),
    "Dress": ("one long piece that widens towards the hem", "a long garment with no split between legs", "a fitted top flowing into a skirt"),
    "Coat": ("long sleeves and an open front with a zip or buttons", "a long outer garment with a front opening", "heavy long sleeves and a collar"),
    "Sandal": ("an open shoe made of straps", "a flat sole held on by thin straps", "a low shoe with gaps between straps"),
    "Shirt": ("a collar and buttons down the front", "long sleeves, a collar and a button placket", "a collared top that opens at the front"),
    "Sneaker": ("a low closed sports shoe", "a laced shoe with a thick flat sole", "a low shoe covering the foot, seen from the side"),
    "Bag": ("a rectangular body with a handle", "a box-like shape with a strap on top", "a handle above a wide body"),
    "Ankle boot": ("a closed shoe rising above the ankle", "a boot with a heel and a high shaft", "a shoe whose top covers the ankle"),
}


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def balanced_subset(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of n samples, n // 10 per class (the remainder to the first classes), seeded."""
    per_class = [n // N_CLASSES + (1 if c < n % N_CLASSES else 0) for c in range(N_CLASSES)]
    keep = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in enumerate(per_class)]
    return np.sort(np.concatenate(keep))


def write_generic(source_dir: Path, out_dir: Path, seed: int, visual_fraction: float, train_samples: int | None = None) -> dict:
    """DecoyFMNIST as the published protocol makes it (add_decoy: train patch = 255 - 25 y, test a
    random class's grey; 60k train / 10k test, the source splits), written in the generic layout:

        images/{train,test}/NNNNN.png     the decoyed 28x28 grey images
        masks/{train,test}/NNNNN.png      the object's own pixels (the original image > 0, patch
                                          excluded), on the first `visual_fraction` of a seeded
                                          permutation of train (1.0: every train sample) and on
                                          every test sample (the ground truth of mIoU and
                                          relevance mass; training never reads test)
        manifest.jsonl                    id, image, label, split (train / test), one templated
                                          explanation per train sample, three per test sample, visual
        decoy_truth.json                  per sample: the patch's class and its corner, for analysis

    `train_samples` keeps a class-balanced seeded subset of train (ids keep their source index); the
    decoys are drawn on all 60,000 first, so a subset's images are those of the full set.
    """
    data = load_fashion_mnist(source_dir)
    rng = np.random.default_rng([seed, 0])
    lines, truth = [], {}
    with atomic_dir(out_dir) as tmp:
        for split in ("train", "test"):
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "masks" / split).mkdir(parents=True)
            images, labels = data[f"{split}_images"], data[f"{split}_labels"]
            decoyed, masks = add_decoy(images, labels, rng, train=split == "train")
            if split == "train":
                with_map = np.zeros(len(images), dtype=bool)
                with_map[rng.permutation(len(images))[: round(visual_fraction * len(images))]] = True
            else:
                with_map = np.ones(len(images), dtype=bool)  # test: every mask scores the CAMs
            picks = rng.integers(0, 3, size=len(images))
            kept = np.arange(len(images))
            if split == "train" and train_samples is not None:
                kept = balanced_subset(labels, train_samples, np.random.default_rng([seed, 1]))
            for i in kept:
                name = f"{split}/{i:05d}.png"
                label = CLASS_NAMES[int(labels[i])]
                texts = EXPLANATIONS[label]
                record = {"id": f"{split}-{i:05d}", "image": name, "label": label, "split": split,
                          "explanations": [texts[picks[i]]] if split == "train" else list(texts)}
                # plain writes: the whole folder is swapped in at once (atomic_dir)
                (tmp / "images" / name).write_bytes(_png(decoyed[i]))
                if with_map[i]:
                    own = ((images[i] > 0) & ~masks[i]).astype(np.uint8) * 255
                    (tmp / "masks" / name).write_bytes(_png(own))
                    record["visual"] = f"masks/{name}"
                lines.append(json.dumps(record, sort_keys=True))
                rows, cols = np.nonzero(masks[i])
                patch_grey = int(decoyed[i][rows[0], cols[0]])
                truth[record["id"]] = {"decoy_class": int((255 - patch_grey) // MULT), "decoy_box": [int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())]}
        write_bytes(tmp / "manifest.jsonl", ("\n".join(lines) + "\n").encode("utf-8"))
        write_json(tmp / "decoy_truth.json", truth)
    summary = {"samples": {}, "decoy_agreement": {}, "visual_maps": sum('"visual"' in line for line in lines)}
    for split in ("train", "test"):
        ids = [k for k in truth if k.startswith(f"{split}-")]
        labels = data[f"{split}_labels"]
        summary["samples"][split] = len(ids)
        summary["decoy_agreement"][split] = round(float(np.mean([truth[k]["decoy_class"] == int(labels[int(k[-5:])]) for k in ids])), 4)
    return summary
