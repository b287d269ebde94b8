"""Image classification on scikit-learn's 8x8 digits, mirroring CLIP ViT fine-tuning.

One permutation of the (deduplicated) images, fixed by data_seed alone, reserves its first 40% as
the pretext pool for the backbone's self-supervised pretraining (rotation prediction); every
downstream task draws only from the other 60%, so no downstream image was seen in pretraining.
Corrupted copies of each test split (severity 1..5) mirror the paper's CIFAR-100-C evaluation.
"""

from functools import lru_cache

import numpy as np
import pandas as pd

from lorarepro.domain.data.io import CAPACITY, GENERATORS, SPLITS, noisy_train_split, rng_for, split_sizes

IMAGE_SIZE = 8
NUM_CLASSES = 10
PRETEXT_FRACTION = 0.4
SEVERITIES = [1, 2, 3, 4, 5]
CORRUPTIONS = ["gaussian_noise", "blur", "contrast", "occlusion"]
# per-severity strength of each corruption; every one grows (or, for contrast, shrinks) with s
NOISE_SIGMA = [0.08, 0.16, 0.24, 0.32, 0.40]
BLUR_SIGMA = [0.4, 0.6, 0.8, 1.0, 1.3]
CONTRAST_FACTOR = [0.75, 0.6, 0.45, 0.3, 0.15]
OCCLUSION_SIZE = [(2, 2), (2, 3), (3, 3), (3, 4), (4, 4)]
OCCLUSION_VALUE = 0.5  # mid-grey differs from both the digits' ink and their background


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """All distinct digits images as float32 [N, 8, 8] in [0, 1], and their labels."""
    from sklearn.datasets import load_digits  # deferred: scikit-learn's import is slow

    data = load_digits()
    flat = data.images.reshape(len(data.images), -1)
    _, first = np.unique(flat, axis=0, return_index=True)
    keep = np.sort(first)  # drop exact duplicates so splits can be disjoint by pixels
    images = (data.images[keep] / 16.0).astype(np.float32)
    labels = data.target[keep].astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def pools(data_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the pretext pool and of the downstream pool; depends on data_seed only."""
    count = len(_digits()[1])
    order = rng_for(data_seed, "vision", "pools").permutation(count)
    cut = int(round(PRETEXT_FRACTION * count))
    return order[:cut], order[cut:]


def invert_transpose(images: np.ndarray) -> np.ndarray:
    """The domain shift of `digits_inverted`: intensities 1 - x and the image transposed."""
    return 1.0 - np.transpose(images, (0, 2, 1))


def _frame(images: np.ndarray, labels: np.ndarray, corruption=None) -> pd.DataFrame:
    flat = np.ascontiguousarray(images, dtype=np.float32).reshape(len(images), -1)
    frame = {"pixels": list(flat), "label": np.asarray(labels, dtype=np.int64)}
    if corruption is not None:
        frame["corruption"] = list(corruption)
    return pd.DataFrame(frame)


def _corrupt_one(image: np.ndarray, kind: str, s: int, noise: np.ndarray, anchor) -> np.ndarray:
    from scipy.ndimage import gaussian_filter  # deferred: only corrupted copies need scipy

    i = s - 1
    if kind == "gaussian_noise":
        out = image + NOISE_SIGMA[i] * noise
    elif kind == "blur":
        out = gaussian_filter(image, sigma=BLUR_SIGMA[i], mode="nearest")
    elif kind == "contrast":
        out = (image - image.mean()) * CONTRAST_FACTOR[i] + image.mean()
    else:
        out, (h, w) = image.copy(), OCCLUSION_SIZE[i]
        out[anchor[0] : anchor[0] + h, anchor[1] : anchor[1] + w] = OCCLUSION_VALUE
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def corrupt(images: np.ndarray, rng: np.random.Generator) -> tuple[list[str], dict]:
    """Corruption kind per image and {severity: corrupted images}.

    Kind, noise draw and occlusion anchor are fixed per image across severities, so only the
    strength changes with s and the damage grows monotonically.
    """
    n = len(images)
    kinds = [CORRUPTIONS[k] for k in rng.permutation(np.arange(n) % len(CORRUPTIONS))]
    noise = rng.standard_normal(images.shape).astype(np.float32)
    anchors = rng.integers(0, IMAGE_SIZE - 3, size=(n, 2))
    out = {}
    for s in SEVERITIES:
        out[s] = np.stack([_corrupt_one(images[j], kinds[j], s, noise[j], anchors[j])
                           for j in range(n)]) if n else images.copy()
    return kinds, out


def _prepare(task: str, task_cfg: dict, data_seed: int, transform) -> tuple[dict, dict]:
    sizes = split_sizes(task, task_cfg)
    images, labels = _digits()
    _, pool = pools(data_seed)
    need = sum(sizes.values())
    if need > len(pool):
        raise ValueError(f"task {task!r}: sizes ask for {need} images but only {len(pool)} "
                         "are available outside the pretext pool")
    chosen = pool[rng_for(data_seed, "vision", task).permutation(len(pool))[:need]]
    x, y = transform(images[chosen]), labels[chosen]
    splits, start = {}, 0
    for split in SPLITS:
        stop = start + sizes[split]
        splits[split] = _frame(x[start:stop], y[start:stop])
        start = stop
    test_x, test_y = x[need - sizes["test"] :], y[need - sizes["test"] :]
    kinds, corrupted = corrupt(test_x, rng_for(data_seed, "vision", task, "ood"))
    for s in SEVERITIES:
        splits[f"ood_s{s}"] = _frame(corrupted[s], test_y, corruption=kinds)
    meta = {"family": "vision", "num_labels": NUM_CLASSES, "image_size": IMAGE_SIZE,
            "ood_severities": list(SEVERITIES), "corruptions": list(CORRUPTIONS),
            **noisy_train_split(task, task_cfg, data_seed, splits, NUM_CLASSES)}
    return splits, meta


def capacity(data_seed: int) -> int:
    """The downstream pool's size: the images every vision task draws its splits from."""
    return len(pools(data_seed)[1])


CAPACITY.register("digits", capacity)
CAPACITY.register("digits_inverted", capacity)


@GENERATORS.register("digits")
def digits(task: str, task_cfg: dict, data_seed: int) -> tuple[dict, dict]:
    return _prepare(task, task_cfg, data_seed, lambda images: images.copy())


@GENERATORS.register("digits_inverted")
def digits_inverted(task: str, task_cfg: dict, data_seed: int) -> tuple[dict, dict]:
    return _prepare(task, task_cfg, data_seed, invert_transpose)


def pretext_frame(data_seed: int) -> pd.DataFrame:
    """Every pretext-pool image in all four rotations, labelled 0..3 (multiples of 90 degrees)."""
    images = _digits()[0][pools(data_seed)[0]]
    rotated = np.concatenate([np.rot90(images, k, axes=(1, 2)) for k in range(4)])
    labels = np.repeat(np.arange(4), len(images))
    order = rng_for(data_seed, "vision", "pretext").permutation(len(rotated))
    return _frame(rotated[order], labels[order])


def pretext(data_seed: int, examples: int) -> tuple[pd.DataFrame, dict]:
    """The pretext corpus (pretext_frame: `examples` does not apply) and what its manifest adds."""
    return pretext_frame(data_seed), {"num_labels": 4, "image_size": IMAGE_SIZE}


def pixels_to_tensor(df: pd.DataFrame):
    """The `pixels` column as a float tensor [N, 1, 8, 8]."""
    import torch  # deferred: config checks import lorarepro.domain.data, and must not pay for torch

    if len(df) == 0:
        return torch.zeros(0, 1, IMAGE_SIZE, IMAGE_SIZE)
    flat = np.stack(df["pixels"].to_numpy()).astype(np.float32)
    return torch.from_numpy(flat.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE))
