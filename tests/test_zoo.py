"""The registry and loader: names, close matches, saved folders, and every registered entry."""

import json
import subprocess
import sys

import keras
import pytest

import emzoo
from emzoo import testing, weights, zoo
from emzoo.errors import EmzooError, UnknownModelError
from emzoo.models.base import Interpolator


@zoo.register_architecture("test-blend")
class _Blend(Interpolator):
    """Tiny interpolator for registry tests: a learned 3x3 conv of the frames' mean."""

    size_multiple = 4

    def __init__(self, filters=4, channels=1, **kwargs):
        super().__init__(channels=channels, **kwargs)
        self.filters = filters
        self.hidden = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")
        self.out = keras.layers.Conv2D(channels, 3, padding="same")

    def call(self, inputs, training=False):
        mean = 0.5 * (inputs["x0"] + inputs["x1"])
        return {"image": mean + self.out(self.hidden(mean))}

    def get_config(self):
        return {"filters": self.filters, "channels": self.channels}


def _saved(tmp_path, filters=4):
    model = zoo.build_model({"architecture": "test-blend", "config": {"filters": filters}})
    return model, zoo.save(model, tmp_path / "blend", metadata={"description": "test"})


def test_list_models_pattern():
    names = emzoo.list_models()
    assert names == sorted(names)
    assert all(name.startswith("film") for name in emzoo.list_models("film*"))
    assert emzoo.list_models("no-such-*") == []


def test_unknown_name_lists_names_and_close_matches():
    with pytest.raises(UnknownModelError) as info:
        emzoo.load("flim")
    message = str(info.value)
    assert "Received: name_or_dir='flim'" in message
    for name in emzoo.list_models():
        assert name in message
    if "film" in emzoo.list_models():
        assert "Did you mean: film" in message


def test_saved_folder_loads_like_an_entry(tmp_path):
    model, folder = _saved(tmp_path)
    entry = json.loads((folder / "config.json").read_text())
    assert entry["architecture"] == "test-blend"
    assert entry["metadata"]["params"] == model.count_params()
    inputs, _ = testing.random_inputs(2, 8, 8, 1)
    loaded = emzoo.load(str(folder))
    testing.assert_trees_close(loaded(inputs), model(inputs))
    assert loaded.optimizer is not None  # compiled


@pytest.mark.slow
def test_save_writes_model_weights_without_optimizer_state(tmp_path):
    import h5py

    model = emzoo.load("film", weights=None, compile=False, pyramid_levels=3,
                       fusion_pyramid_levels=3, specialized_levels=1, sub_levels=2, filters=2,
                       flow_convs=[1, 1], flow_filters=[2, 2], channels=1)
    model.compile(optimizer="adam", loss="mae")
    inputs, target = testing.random_inputs(2, 16, 16, 1)
    model.fit(inputs, target, epochs=1, verbose=0)  # Adam now has moments to (not) save
    folder = zoo.save(model, tmp_path / "trained")
    with h5py.File(folder / "model.weights.h5", "r") as stored:
        assert "optimizer" not in stored
    loaded = emzoo.load(str(folder))
    testing.assert_trees_close(loaded(inputs), model(inputs))


def test_save_refuses_to_overwrite(tmp_path):
    model, folder = _saved(tmp_path)
    with pytest.raises(EmzooError, match="already exists"):
        zoo.save(model, folder)


def test_config_overrides_and_unknown_keys(tmp_path):
    _, folder = _saved(tmp_path)
    assert emzoo.load(str(folder), weights=None, filters=2).filters == 2
    with pytest.raises(EmzooError, match="Received: fliters=2"):
        emzoo.load(str(folder), weights=None, fliters=2)


def test_weights_of_another_config_are_a_clear_error(tmp_path):
    _, folder = _saved(tmp_path)
    with pytest.raises(EmzooError, match="do not fit"):
        emzoo.load(str(folder), filters=3)


def test_folder_without_config(tmp_path):
    with pytest.raises(UnknownModelError, match="not a saved emzoo model"):
        emzoo.load(str(tmp_path))


def test_cli_list_and_bad_command(tmp_path):
    # cwd: not the checkout, whose emzoo/ folder would shadow the installed package under -m.
    listed = subprocess.run([sys.executable, "-m", "emzoo.apps.main", "list"],
                            capture_output=True, text=True, check=True, cwd=tmp_path)
    for name in emzoo.list_models():
        assert name in listed.stdout
    bad = subprocess.run([sys.executable, "-m", "emzoo.apps.main", "upscal"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode != 0
    assert "Did you mean `upscale`" in bad.stderr and "Traceback" not in bad.stderr


_SEEN_CONFIGS = set()
PAPER_SIZE = 1_000_000  # parameters: a published configuration takes about a minute here (slow)
# the trained entries' outputs, parameters and configs: tests/models/test_trained_entries.py (fast)
ENTRIES = [pytest.param(name, marks=pytest.mark.slow)
           if (emzoo.describe_model(name)["metadata"].get("params") or 0) > PAPER_SIZE
           or weights.source(emzoo.describe_model(name)["weights"]) == "bundled" else name
           for name in emzoo.list_models()]


@pytest.mark.parametrize("name", ENTRIES)
def test_every_entry(name):
    """Builds each entry with random weights; forward, train step, config round trip, params.

    Entries sharing a configuration train once; a trained entry with bundled weights does not
    (each architecture's training step is pinned in tests/models; its weights and outputs in
    tests/models/test_trained_entries.py)."""
    entry = emzoo.describe_model(name)
    key = (entry["architecture"], json.dumps(entry["config"], sort_keys=True))
    train = key not in _SEEN_CONFIGS and weights.source(entry["weights"]) != "bundled"
    _SEEN_CONFIGS.add(key)
    testing.check_zoo_entry(name, train=train)


def test_every_architecture_has_a_bare_entry():
    names = emzoo.list_models()
    for architecture in zoo.architectures():
        if zoo.get_architecture(architecture).__module__.startswith("emzoo.models."):
            assert architecture in names, f"architecture {architecture} lacks zoo_configs/{architecture}.json"


def test_load_trained_refuses_entries_without_weights_before_building(monkeypatch, tmp_path):
    import numpy as np

    from emzoo.errors import WeightsError

    monkeypatch.setenv("EMZOO_HOME", str(tmp_path / "home"))
    built = []
    monkeypatch.setattr(zoo, "build_model", lambda *a, **k: built.append(a))
    with pytest.raises(WeightsError, match="`tsain` has no trained weights.*emzoo train tsain"):
        zoo.load_trained("tsain")
    with pytest.raises(WeightsError, match="emzoo convert film .* --name film-l1"):
        zoo.load_trained("film-l1")
    # The volume engine loads names through it: no silent run on random weights.
    with pytest.raises(WeightsError, match="no trained weights"):
        emzoo.upscale_volume(np.zeros((3, 8, 8), np.float32), "tsain", progress=False)
    assert built == []
    assert zoo.check_trained("default") and not zoo.check_trained("tsain", allow_random_weights=True)


@pytest.mark.slow   # builds published configurations
def test_load_of_an_entry_without_weights_asks_for_random_weights_explicitly(monkeypatch):
    # emzoo.load("tsain") used to return random weights silently, while load_trained refused.
    from emzoo.errors import RandomWeightsError

    built = []
    monkeypatch.setattr(zoo, "build_model", lambda *a, **k: built.append(a))
    with pytest.raises(RandomWeightsError, match="`tsain` has no trained weights.*weights=None"):
        emzoo.load("tsain")
    assert built == []
    monkeypatch.undo()
    assert emzoo.load("tsain", weights=None, compile=False).count_params() > 0


def test_load_trained_allows_random_weights_only_when_asked(tmp_path):
    from emzoo.errors import WeightsError

    _, folder = _saved(tmp_path)
    assert zoo.load_trained(str(folder), compile=False).filters == 4  # has its weights
    (folder / "model.weights.h5").unlink()
    with pytest.raises(WeightsError, match="weights file is missing"):
        zoo.load_trained(str(folder))
    assert zoo.load_trained(str(folder), allow_random_weights=True, compile=False).filters == 4
