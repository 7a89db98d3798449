"""Shared fixtures of the volume I/O tests."""

import numpy as np
import pytest


@pytest.fixture
def random_stack():
    """``random_stack(dtype, shape=(5, 12, 10), seed=0)``: random values over the dtype's whole range."""

    def make(dtype, shape=(5, 12, 10), seed=0):
        rng = np.random.default_rng(seed)
        if dtype == "float32":
            return rng.random(shape, dtype=np.float32)
        top = 255 if dtype == "uint8" else 65535
        return rng.integers(0, top + 1, size=shape).astype(dtype)

    return make
