"""N-way K-shot tasks from scikit-learn's bundled handwritten digits (no download).

The 1,797 digits (8x8, 16 grey levels) form 10 classes; each class rotated by 0, 90, 180 and
270 degrees is a class of its own (the augmentation of the Omniglot few-shot benchmark), which
gives 40 classes of 174..183 images. A seeded permutation of the 40 classes splits them into
meta-train, meta-validation and meta-test classes (24 / 8 / 8 by default) that share no class.

A :class:`TaskSampler` draws tasks from one split with its own seed: ``n_way`` classes without
replacement, then ``k_shot + n_query`` distinct images of each; the classes are relabelled
0..n_way-1 in the order drawn. The same seed gives the same sequence of tasks.

    from fewshot_data import FewShotDigits
    data = FewShotDigits()                       # split seed 0
    sampler = data.sampler("train", n_way=5, k_shot=1, n_query=15, seed=1)
    task = sampler.sample()                      # task.xs (5, 64), task.ys (5,), task.xq, task.yq

Images are flattened to 64 features scaled to [0, 1] (float32).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

__all__ = ["SPLITS", "FewShotDigits", "Task", "TaskSampler"]

SPLITS = ("train", "val", "test")
ROTATIONS = (0, 1, 2, 3)  # multiples of 90 degrees


class Task(NamedTuple):
    """One few-shot task: support ``(xs, ys)``, query ``(xq, yq)``, and the global class ids
    behind labels 0..n_way-1."""

    xs: torch.Tensor
    ys: torch.Tensor
    xq: torch.Tensor
    yq: torch.Tensor
    classes: tuple[int, ...]


class FewShotDigits:
    """The 40 rotated digit classes, split class-disjointly by a seeded permutation.

    Args:
        split_seed: seed of the permutation that assigns classes to the splits.
        split_sizes: numbers of classes of meta-train, meta-validation and meta-test.
    """

    def __init__(self, split_seed: int = 0, split_sizes: tuple[int, int, int] = (24, 8, 8)) -> None:
        from sklearn.datasets import load_digits

        if len(split_sizes) != 3 or any(int(n) < 1 for n in split_sizes):
            raise ValueError(
                f"Invalid value for 'split_sizes': {split_sizes!r} (expected three positive "
                "numbers of classes)"
            )
        x, y = load_digits(return_X_y=True)
        images = (x.reshape(-1, 8, 8) / 16.0).astype(np.float32)
        self.images: list[torch.Tensor] = []  # class id -> (n_c, 64)
        for k in ROTATIONS:
            for digit in range(10):
                rotated = np.rot90(images[y == digit], k=k, axes=(1, 2))
                self.images.append(torch.from_numpy(np.ascontiguousarray(rotated).reshape(-1, 64)))
        n_classes = len(self.images)
        if sum(split_sizes) != n_classes:
            raise ValueError(
                f"Invalid value for 'split_sizes': {split_sizes!r} sums to {sum(split_sizes)}, "
                f"expected {n_classes} (the number of classes)"
            )
        perm = np.random.default_rng(split_seed).permutation(n_classes).tolist()
        a, b, _ = split_sizes
        self.splits: dict[str, tuple[int, ...]] = {
            "train": tuple(sorted(perm[:a])),
            "val": tuple(sorted(perm[a : a + b])),
            "test": tuple(sorted(perm[a + b :])),
        }

    @staticmethod
    def describe(class_id: int) -> str:
        """``"digit 3 rotated 90"`` for a class id."""
        return f"digit {class_id % 10} rotated {90 * (class_id // 10)}"

    def sampler(self, split: str, n_way: int, k_shot: int, n_query: int, seed: int) -> TaskSampler:
        """A seeded sampler of tasks from ``split`` (``"train"``, ``"val"`` or ``"test"``)."""
        if split not in self.splits:
            raise ValueError(f"Invalid value for 'split': {split!r} (expected one of {SPLITS})")
        return TaskSampler(self, self.splits[split], n_way, k_shot, n_query, seed)


class TaskSampler:
    """Draws tasks from a fixed set of classes; see the module documentation."""

    def __init__(
        self,
        data: FewShotDigits,
        classes: tuple[int, ...],
        n_way: int,
        k_shot: int,
        n_query: int,
        seed: int,
    ) -> None:
        smallest = min(len(data.images[c]) for c in classes)
        for name, value, low in (
            ("n_way", n_way, 1),
            ("k_shot", k_shot, 1),
            ("n_query", n_query, 1),
        ):
            if not isinstance(value, int) or value < low:
                raise ValueError(
                    f"Invalid value for '{name}': {value!r} (expected an int >= {low})"
                )
        if n_way > len(classes):
            raise ValueError(
                f"Invalid value for 'n_way': {n_way} (the split has {len(classes)} classes)"
            )
        if k_shot + n_query > smallest:
            raise ValueError(
                f"Invalid values for 'k_shot' + 'n_query': {k_shot + n_query} (the smallest "
                f"class of the split has {smallest} images)"
            )
        self.data, self.classes = data, classes
        self.n_way, self.k_shot, self.n_query = n_way, k_shot, n_query
        self.rng = np.random.default_rng(seed)

    def sample(self) -> Task:
        chosen = self.rng.choice(len(self.classes), size=self.n_way, replace=False)
        classes = tuple(int(self.classes[i]) for i in chosen)
        xs, xq = [], []
        per_class = self.k_shot + self.n_query
        for c in classes:
            pool = self.data.images[c]
            idx = torch.from_numpy(self.rng.choice(len(pool), size=per_class, replace=False))
            picked = pool[idx]
            xs.append(picked[: self.k_shot])
            xq.append(picked[self.k_shot :])
        labels = torch.arange(self.n_way)
        return Task(
            xs=torch.cat(xs),
            ys=labels.repeat_interleave(self.k_shot),
            xq=torch.cat(xq),
            yq=labels.repeat_interleave(self.n_query),
            classes=classes,
        )

    def tasks(self, n: int) -> list[Task]:
        """The next ``n`` tasks."""
        return [self.sample() for _ in range(n)]
