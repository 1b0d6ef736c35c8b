"""Explicit randomness: every stochastic function takes a generator or a seed it turns into one."""

from __future__ import annotations

import torch

__all__ = ["as_generator", "spawn_seeds"]

SeedLike = int | torch.Generator | None


def as_generator(seed: SeedLike, device: str | torch.device = "cpu") -> torch.Generator:
    """Turn ``seed`` (an int, a generator, or None meaning seed 0) into a ``torch.Generator``.

    A generator passed in is returned as is (it must live on ``device``). Never the global RNG.
    """
    if isinstance(seed, torch.Generator):
        return seed
    if seed is None:
        seed = 0
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or a torch.Generator, got {seed!r}")
    return torch.Generator(device=device).manual_seed(seed)


def spawn_seeds(root_seed: int, num: int) -> list[int]:
    """Derive ``num`` independent 63-bit seeds from one recorded root seed (deterministic)."""
    # on the CPU whatever the default device (torch.set_default_device): the seeds are the same everywhere
    g = torch.Generator(device="cpu").manual_seed(int(root_seed))
    return torch.randint(0, 2**62, (num,), generator=g, dtype=torch.int64, device="cpu").tolist()
