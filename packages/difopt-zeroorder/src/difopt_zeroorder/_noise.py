"""Drawing the perturbations: the user's distribution, made reproducible on request.

A distribution is anything with a ``sample(sample_shape)`` method (a
:class:`torch.distributions.Distribution`, a :class:`~difopt_zeroorder.ZeroOrderGradientModule`)
or a plain callable ``sample_fn(sample_shape)``. Neither accepts a :class:`torch.Generator`, so
reproducibility is obtained by running the draw on a forked copy of PyTorch's default random
state that is loaded from (and written back to) a generator owned by the estimator: the draw is
then a deterministic function of the seed, and the global random state is left untouched.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import torch

__all__ = ["NoiseSource", "resolve_sampler", "validate_generator"]

SampleFn = Callable[[torch.Size], Any]


def resolve_sampler(distribution: Any) -> SampleFn:
    """Return the function that draws ``sample_shape``-shaped noise from ``distribution``.

    Raises:
        TypeError: ``distribution`` has no ``sample`` method and is not callable.
    """
    if isinstance(distribution, torch.distributions.Distribution) and distribution.has_rsample:
        # The same distribution; for Normal, rsample draws with one in-place normal_() where
        # sample() goes through torch.normal(mean, std) element by element (~10x slower).
        return distribution.rsample
    sample = getattr(distribution, "sample", None)
    if callable(sample):
        return sample
    if callable(distribution):
        return distribution
    raise TypeError(
        "'distribution' must be a torch.distributions.Distribution, an object with a "
        "sample(sample_shape) method, or a callable sample_fn(sample_shape) -> Tensor; "
        f"got {type(distribution).__name__}"
    )


def validate_generator(generator: Any) -> None:
    """Check ``generator`` is ``None``, an integer seed or a :class:`torch.Generator`."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if isinstance(generator, bool) or not isinstance(generator, int):
        raise TypeError(
            "'generator' must be None, an int seed or a torch.Generator; "
            f"got {type(generator).__name__}"
        )
    if not 0 <= generator < 2**64:
        raise ValueError(f"'generator' seed must be in [0, 2**64), got {generator}")


def _device_key(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index}"
    return device.type


class NoiseSource:
    """Draws a batch of perturbations per parameter leaf, optionally from a fixed seed.

    Args:
        distribution: see :func:`resolve_sampler`.
        generator: ``None`` (draw from PyTorch's global random state, like TorchOpt), an
            integer seed, or a :class:`torch.Generator`. With a seed, one random stream per
            device (the CPU and each CUDA device the parameters live on) starts from that seed
            and advances with every draw. With a generator, that generator's device is drawn
            from its state and the generator advances.
    """

    def __init__(self, distribution: Any, generator: torch.Generator | int | None = None) -> None:
        self.sample_fn = resolve_sampler(distribution)
        # A scalar Normal (the usual choice) is drawn directly on each leaf's device and dtype
        # with one in-place normal_(loc, scale): the same distribution, without the two extra
        # passes of rsample (loc + eps * scale) and the copy to the leaf's device/dtype. Noise
        # generation is most of the cost of a vectorized estimate.
        self._normal: tuple[float, float] | None = None
        if (
            type(distribution) is torch.distributions.Normal
            and distribution.batch_shape == torch.Size()
            and distribution.event_shape == torch.Size()
        ):
            self._normal = (float(distribution.loc), float(distribution.scale))
        validate_generator(generator)
        self._seed: int | None = generator if isinstance(generator, int) else None
        self._generator = generator if isinstance(generator, torch.Generator) else None
        # Random states per device key, for an int seed (tensors, so the source pickles).
        self._states: dict[str, torch.Tensor] = {}

    @contextlib.contextmanager
    def _seeded(self, devices: set[str]) -> Iterator[None]:
        if self._seed is None and self._generator is None:
            yield
            return
        if self._generator is not None:
            controlled = {_device_key(self._generator.device)}
        else:
            controlled = devices | {"cpu"}
        cuda = sorted(int(k.split(":")[1]) for k in controlled if k.startswith("cuda:"))
        with torch.random.fork_rng(devices=cuda):
            for key in controlled:
                _set_state(key, self._state(key))
            yield
            for key in controlled:
                self._save_state(key, _get_state(key))

    def _state(self, key: str) -> torch.Tensor:
        if self._generator is not None:
            return self._generator.get_state()
        if key not in self._states:
            assert self._seed is not None
            g = torch.Generator(device=key)
            g.manual_seed(self._seed)
            self._states[key] = g.get_state()
        return self._states[key]

    def _save_state(self, key: str, state: torch.Tensor) -> None:
        if self._generator is not None:
            self._generator.set_state(state)
        else:
            self._states[key] = state

    def draw(self, leaves: Sequence[torch.Tensor], num_samples: int) -> list[torch.Tensor]:
        """One tensor of shape ``(num_samples, *leaf.shape)`` per leaf, in its dtype/device.

        Raises:
            ValueError: the distribution returned samples of another shape.
            TypeError: the distribution returned something that is not numeric.
        """
        devices = {_device_key(leaf.device) for leaf in leaves}
        noises = []
        with torch.no_grad(), self._seeded(devices):
            for i, leaf in enumerate(leaves):
                shape = torch.Size((num_samples, *leaf.shape))
                if self._normal is not None:
                    noise = torch.empty(shape, dtype=leaf.dtype, device=leaf.device)
                    noises.append(noise.normal_(*self._normal))
                    continue
                raw = self.sample_fn(shape)
                try:
                    noise = torch.as_tensor(raw)
                except (TypeError, ValueError, RuntimeError) as exc:
                    raise TypeError(
                        f"'distribution' must return a tensor of shape sample_shape; for "
                        f"sample_shape={tuple(shape)} it returned {type(raw).__name__}"
                    ) from exc
                if noise.shape != shape:
                    raise ValueError(
                        f"'distribution' returned samples of shape {tuple(noise.shape)} for "
                        f"sample_shape={tuple(shape)} (parameter leaf {i} has shape "
                        f"{tuple(leaf.shape)}, {num_samples} sample(s)); the samples must "
                        "have exactly sample_shape: use a distribution with empty batch_shape "
                        "and event_shape such as torch.distributions.Normal(0.0, 1.0), or a "
                        "sample_fn that returns torch.randn(sample_shape)"
                    )
                if not (noise.is_floating_point() or noise.is_complex()):
                    noise = noise.to(torch.get_default_dtype())
                noises.append(noise.to(device=leaf.device, dtype=leaf.dtype))
        return noises


def _get_state(key: str) -> torch.Tensor:
    if key == "cpu":
        return torch.get_rng_state()
    if key.startswith("cuda:"):
        return torch.cuda.get_rng_state(int(key.split(":")[1]))
    raise ValueError(f"'generator' on device {key!r} is not supported (use 'cpu' or 'cuda')")


def _set_state(key: str, state: torch.Tensor) -> None:
    if key == "cpu":
        torch.set_rng_state(state)
    elif key.startswith("cuda:"):
        torch.cuda.set_rng_state(state, int(key.split(":")[1]))
    else:
        raise ValueError(f"'generator' on device {key!r} is not supported (use 'cpu' or 'cuda')")
