"""Fixtures the app tests share: a saved tiny FILM and a small uint8 stack."""

import numpy as np
import pytest

from emzoo.data.volumes import write_volume
from emzoo_test_helpers import save_tiny_film


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A saved tiny FILM (random weights of seed 0, size multiple 2), loadable with --model DIR;
    one for all the app tests, which only read it."""
    import keras

    keras.utils.set_random_seed(0)
    return save_tiny_film(tmp_path_factory.mktemp("models"))


@pytest.fixture
def stack(tmp_path):
    """A 3 x 24 x 40 uint8 TIFF with voxel size 40 x 8 x 8 nm (modules may define their own)."""
    path = tmp_path / "stack.tif"
    rng = np.random.default_rng(0)
    write_volume(str(path), rng.integers(0, 255, (3, 24, 40)).astype(np.uint8),
                 voxel_size=(40, 8, 8))
    return path
