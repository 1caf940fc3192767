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
import zlib
from pathlib import Path

import numpy as np

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
