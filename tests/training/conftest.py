"""Fixtures of the training tests: the synthetic stack every tiny run trains on."""

import pytest


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    """A 20 x 48 x 48 uint8 stack whose pattern moves with z (:func:`make_training_volume`)."""
    pytest.importorskip("tensorflow")
    from emzoo_test_helpers import make_training_volume

    return make_training_volume(tmp_path_factory.mktemp("data") / "stack.tif")
