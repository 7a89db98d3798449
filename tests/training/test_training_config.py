"""Tests of emzoo.training.config: TrainConfig's checks, JSON round trip and resume rules."""

import dataclasses
import inspect
import pathlib

import pytest

from emzoo import training
from emzoo.errors import EmzooError
from emzoo.training.config import (RESUME_FIXED, TrainConfig, check_loss,
                                   resolve_training_precision)

pytestmark = pytest.mark.usefixtures("tiny_test_architecture")  # the tests train "tiny-test"


def test_parse_overrides_types_values():
    assert training.parse_overrides(["a=1", "b=0.5", "c=[1, 2]", "d=text", "e=false"]) == {
        "a": 1, "b": 0.5, "c": [1, 2], "d": "text", "e": False}


def test_parse_overrides_takes_dicts_and_rejects_bare_keys():
    assert training.parse_overrides({"a": 1}) == {"a": 1}
    assert training.parse_overrides([{"a": 1}, "b=2"]) == {"a": 1, "b": 2}
    assert training.parse_overrides(None) == {}
    with pytest.raises(EmzooError, match="key=value"):
        training.parse_overrides(["=3"])


def test_train_defaults_are_the_config_defaults():
    """``train``'s keyword defaults and TrainConfig's field defaults must not drift apart."""
    parameters = inspect.signature(training.train).parameters
    for field in dataclasses.fields(TrainConfig):
        if field.default is not dataclasses.MISSING:
            assert parameters[field.name].default == field.default, field.name
        elif field.default_factory is not dataclasses.MISSING:
            assert parameters[field.name].default in (None, field.default_factory()), field.name


def test_resolve_normalises_command_line_values(volume, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.h5").write_bytes(b"")
    config = TrainConfig.resolve("tiny-test", volume, "6", gaps="1, 2", overrides=["filters=8"],
                                 batch_size="4", crop=32, learning_rate="1e-3", val_fraction=0.25,
                                 logical_cpus=0, weights=pathlib.Path("w.h5"), schedule_scale=1)
    assert config.data == (str(pathlib.Path(volume).resolve()),)
    assert config.steps == 6 and config.batch_size == 4 and config.gaps == (1, 2)
    assert config.overrides == {"filters": 8} and config.learning_rate == 1e-3
    assert config.logical_cpus is None and config.weights == str(tmp_path.resolve() / "w.h5")
    assert isinstance(config.schedule_scale, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.steps = 7


def test_json_round_trip_keeps_every_setting(volume):
    config = TrainConfig.resolve("tiny-test", [volume], 4, crop=32, gaps=(1, 2), loss="l1")
    record = config.to_json()
    assert record["data"] == [str(pathlib.Path(volume).resolve())] and record["gaps"] == [1, 2]
    assert list(record) == [f.name for f in dataclasses.fields(TrainConfig)]
    assert TrainConfig.from_json(dict(record, unknown_key=1)) == config


def test_resume_changes_lists_only_the_fixed_settings(volume):
    config = TrainConfig.resolve("tiny-test", [volume], 4, crop=32, gaps=(1, 2))
    stored = config.to_json()
    assert config.resume_changes(stored) == []
    longer = dataclasses.replace(config, steps=8, log_every=1, strategy="mirrored")
    assert longer.resume_changes(stored) == []  # steps, logging and strategy may change
    other = dataclasses.replace(config, batch_size=2, gaps=(1,))
    assert other.resume_changes(stored) == ["batch_size", "gaps"]
    assert set(RESUME_FIXED) <= {f.name for f in dataclasses.fields(TrainConfig)}


def test_a_run_recorded_with_the_mixed_precision_boolean_resumes_as_its_precision(volume):
    config = TrainConfig.resolve("tiny-test", [volume], 4, crop=32, gaps=(1, 2), precision="auto")
    assert config.precision == "float32"
    older = {k: v for k, v in config.to_json().items() if k != "precision"}
    older["mixed_precision"] = False      # how runs were recorded before `precision`
    assert config.resume_changes(older) == []
    assert TrainConfig.from_json(older) == config
    mixed = TrainConfig.from_json(dict(older, mixed_precision=True))
    assert mixed.precision == resolve_training_precision("mixed")      # bf16 on a CPU
    assert config.resume_changes(mixed.to_json()) == ["precision"]


@pytest.mark.parametrize("change, message", [
    (dict(steps=0), "`steps`"),
    (dict(steps="x"), "`steps`"),
    (dict(gaps="1,x"), "`gaps`"),
    (dict(gaps=""), "one or more integers"),
    (dict(strategy="tpu"), "one of default, mirrored, multi_worker"),
    (dict(learning_rate=0), "`learning_rate`"),
    (dict(val_fraction=1.0), "`val_fraction`"),
    (dict(crop=64), "crop is larger"),
    (dict(gaps=(12,)), "too few slices"),
    (dict(data=[]), "No training data"),
    (dict(overrides=["filters"]), "key=value"),
    (dict(loss="no-such-loss"), "Unknown loss"),
    (dict(model="no-such-model"), "Unknown model"),
    (dict(weights="absent.weights.h5"), "does not exist"),
    (dict(precision="mixed_float16"), "`precision`"),
    (dict(model="tsain", weights="default"), "`tsain` has no trained weights to fine-tune from"),
])
def test_resolve_rejects_bad_settings(volume, change, message):
    settings = dict(model="tiny-test", data=[volume], steps=2, crop=32, gaps=(1, 2))
    settings.update(change)
    with pytest.raises(EmzooError, match=message):
        TrainConfig.resolve(**settings)


def test_resolve_rejects_a_2d_image(tmp_path):
    import numpy as np
    import tifffile

    tifffile.imwrite(tmp_path / "image.tif", np.zeros((32, 32), np.uint8))
    with pytest.raises(EmzooError, match="2-D image"):
        TrainConfig.resolve("tiny-test", [str(tmp_path / "image.tif")], 2)


def test_resolve_rejects_unknown_settings(volume):
    with pytest.raises(TypeError, match="no_such_setting"):
        TrainConfig.resolve("tiny-test", [volume], 2, no_such_setting=1)


@pytest.mark.parametrize("loss", ["auto", "paper", "l1", "l2", "mae", "mse", "huber"])
def test_known_losses_pass_the_check(loss):
    assert check_loss(loss) == loss


def test_unknown_loss_message():
    with pytest.raises(EmzooError, match=r"Unknown loss `nope`\. Expected paper, l1, l2 or a Keras "
                                         r"loss name\. Received: loss='nope'"):
        check_loss("nope")


@pytest.mark.parametrize("model, settings, weights, start, loss", [
    # An entry with trained weights is fine-tuned from them, with the loss it was trained with.
    ("default", {}, "default", "fine-tuning default from its bundled weights", "l2"),
    ("default", dict(loss="l1"), "default", "fine-tuning default from its bundled weights", "l1"),
    ("default", dict(weights=None), None, "training default from scratch (random weights: "
     "--from-scratch)", "l2"),
    ("default", dict(weights="none"), None, "from scratch", "l2"),
    ("default", dict(overrides=["filters=2"]), None, "--set changes its configuration: filters",
     "l2"),
    # Entries and architectures without trained weights start from scratch, with the paper loss.
    ("film", {}, None, "training film from scratch (random weights: it has no trained weights)",
     "paper"),
    ("film-l1", {}, None, "training film-l1 from scratch", "paper"),
    ("tiny-test", {}, None, "training tiny-test from scratch", "paper"),
])
def test_starting_weights_and_loss(volume, model, settings, weights, start, loss):
    from emzoo.training.config import initial_weights

    config = TrainConfig.resolve(model, [volume], 2, crop=32, gaps=(1,), **settings)
    chosen, words = initial_weights(config.model, config.weights, config.overrides)
    assert chosen == weights and start in words and config.loss == loss


def test_recorded_loss_reads_entries_and_run_folders():
    from emzoo import zoo
    from emzoo.training.config import recorded_loss

    assert zoo.describe_model("default")["metadata"]["training_loss"] == "l2"
    assert recorded_loss(zoo.describe_model("default")) == "l2"
    assert recorded_loss(zoo.describe_model("film")) is None
    # A folder written by emzoo train records its loss under metadata.training.loss.
    assert recorded_loss({"metadata": {"training": {"loss": "l1", "steps": 3}}}) == "l1"
    assert recorded_loss({"metadata": {"training": {"stages": []}}}) is None
