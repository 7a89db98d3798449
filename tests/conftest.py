"""Test configuration: quiet TensorFlow, fixed seeds, markers, paths to the shared data, and the
``tiny-test`` architecture for the tests that name it."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Paper losses use random VGG weights in tests: no download of the ImageNet files.
os.environ.setdefault("EMZOO_VGG_WEIGHTS", "random")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FIBSEM = SHARED_DATA / "flyem_medulla_fibsem_10nm" / "volume.tif"
ISBI = SHARED_DATA / "isbi2012_sstem" / "volume.tif"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: larger checks, deselected by default; CI runs them with pytest -m slow")
    config.addinivalue_line("markers", "tf_only: needs the TensorFlow backend")


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
    yield


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not beside the checkout")
    return SHARED_DATA


@pytest.fixture
def tiny_test_architecture():
    """Registers the ``tiny-test`` architecture (tests/emzoo_test_helpers.py); its name."""
    from emzoo_test_helpers import TinyInterpolator

    return TinyInterpolator.architecture


@pytest.fixture
def emzoo_home(tmp_path, monkeypatch):
    """An empty weights cache for one test."""
    home = tmp_path / "emzoo_home"
    monkeypatch.setenv("EMZOO_HOME", str(home))
    return home
