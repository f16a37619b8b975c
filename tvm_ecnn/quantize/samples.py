"""Where calibration samples come from: a ``.npy`` / ``.pt`` file of N inputs, or (announced) random inputs."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

RANDOM_SAMPLES = 8


def load_samples(source, input_shape, seed: int = 0) -> tuple[np.ndarray, str]:
    """``(samples [N, *input_shape[1:]] float32, description)``. ``source``: a path (``.npy``, or ``.pt`` holding a
    tensor or a list of tensors), an array, or None: then ``RANDOM_SAMPLES`` N(0, 1) inputs, with a warning on
    stderr (random data gives scales that real inputs will not match)."""
    shape = tuple(int(d) for d in input_shape)
    if source is None:
        print(f"warning: no calibration data given: calibrating int8 on {RANDOM_SAMPLES} random N(0,1) inputs; "
              "pass --calibration FILE (.npy/.pt of real inputs) for usable accuracy", file=sys.stderr)
        rng = np.random.default_rng(seed)
        return rng.standard_normal((RANDOM_SAMPLES,) + shape[1:]).astype("float32"), f"{RANDOM_SAMPLES} random N(0,1)"
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"calibration file {path} does not exist")
        samples, what = _read(path), f"{path.name}"
    else:
        samples, what = np.asarray(source), "given array"
    samples = np.asarray(samples, dtype="float32")
    if samples.ndim == len(shape) + 1 and samples.shape[1] == 1:
        samples = samples[:, 0]
    if samples.ndim == len(shape) - 1:
        samples = samples[None]
    if samples.ndim != len(shape) or samples.shape[1:] != shape[1:] or len(samples) == 0:
        raise ValueError(f"calibration data ({what}) must hold N inputs of shape {list(shape[1:])} "
                         f"(array [N, {', '.join(map(str, shape[1:]))}]), got {list(samples.shape)}")
    return samples, f"{len(samples)} samples from {what}"


def _read(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as error:
            raise ValueError(f"calibration file {path} is not a plain .npy array: {error}") from None
    if path.suffix == ".pt":
        import torch

        data = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(data, (list, tuple)):
            data = torch.stack([torch.as_tensor(d) for d in data])
        if not isinstance(data, torch.Tensor):
            raise ValueError(f"calibration file {path} must hold a tensor or a list of tensors, got {type(data).__name__}")
        return data.float().numpy()
    raise ValueError(f"calibration file {path} must be .npy or .pt")
