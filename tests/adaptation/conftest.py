"""Shared fixtures of the adaptation tests: a tiny saved FILM and a stack that knows its voxel
size."""

import pytest

from emzoo_test_helpers import save_tiny_film, smooth_volume


@pytest.fixture(scope="session")
def base(tmp_path_factory):
    """A tiny saved FILM shared by every adaptation test (each adaptation writes elsewhere and only
    reads it), with the weights seed 0 gives, as when it was built for each test."""
    import keras

    keras.utils.set_random_seed(0)
    return str(save_tiny_film(tmp_path_factory.mktemp("base")))


@pytest.fixture
def stack(tmp_path):
    """The smooth volume as a TIFF that records its voxel size (40 x 10 x 10 nm)."""
    from emzoo.data.volumes import write_volume

    path = tmp_path / "stack.tif"
    write_volume(str(path), smooth_volume(), voxel_size=(40, 10, 10))
    return str(path)
