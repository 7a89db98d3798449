"""Import of original film_net SavedModels by variable name, and its error cases.

No original SavedModel is available here, so the tests write SavedModels laid out like the
original (spec §2.2-2.3) with :func:`emzoo.models.film.saved_model.write_original_layout`: a root object
whose ``variables`` list holds ``tf.Variable``s named ``feat_net/sub_extractor/cfeat_conv_0/kernel``
..., checkpoint keys ``variables/<N>/.ATTRIBUTES/VARIABLE_VALUE``, a ``serving_default`` signature.
A mapping error (two same-shaped convs swapped, a fusion conv out of order) changes the outputs,
which the round-trip tests compare exactly.
"""

import json
import pathlib
import shutil

import numpy as np
import pytest

from emzoo import testing, weights
from emzoo.errors import WeightsError
from emzoo.models.film.saved_model import infer_config, load_film_saved_model, write_original_layout
from emzoo.models.film import FILM

pytestmark = pytest.mark.tf_only

SMALL = dict(pyramid_levels=3, fusion_pyramid_levels=3, specialized_levels=1, sub_levels=2,
             filters=4, flow_convs=[1, 1], flow_filters=[4, 4])
# The 82 variables of a released film_net SavedModel (copy of shared/specs/film_saved_model_variables.json).
SPEC_VARIABLES = pathlib.Path(__file__).parent / "film_saved_model_variables.json"


def randomised_small(seed, **overrides):
    model = FILM(**{**SMALL, **overrides})
    model(testing.random_inputs(1, 16, 16, model.channels)[0])
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32"))
    return model


def original_names_of(model, rename=lambda name: name):
    return [(rename(name), np.asarray(v)) for name, v in model.original_variables().items()]


@pytest.fixture(scope="module")
def source():
    return randomised_small(seed=3)


@pytest.fixture(scope="module")
def original_dir(source, tmp_path_factory):
    return write_original_layout(tmp_path_factory.mktemp("film") / "saved_model",
                                 original_names_of(source))


def test_round_trip_reproduces_the_source_model(source, original_dir):
    inputs, _ = testing.random_inputs(2, 16, 16, 3, seed=5)
    target = randomised_small(seed=4)
    assert not np.allclose(np.asarray(target(inputs)["image"]), np.asarray(source(inputs)["image"]))
    weights.load_into(target, original_dir, "film_saved_model")
    np.testing.assert_array_equal(np.asarray(target(inputs)["image"]),
                                  np.asarray(source(inputs)["image"]))


def test_shifted_fusion_names_and_scope_prefix_still_map(source, tmp_path):
    def rename(name):  # a model built after 13 other convs, inside an outer scope
        if name.startswith("fusion/conv2d"):
            layer, kind = name.split("/")[1:]
            index = int(layer[len("conv2d_"):] or 0) if "_" in layer else 0
            name = f"fusion/conv2d_{index + 13}/{kind}"
        return "film_net/" + name

    path = write_original_layout(tmp_path / "sm", original_names_of(source, rename))
    target = load_film_saved_model(randomised_small(seed=9), path)
    inputs, _ = testing.random_inputs(1, 16, 16, 3, seed=6)
    np.testing.assert_array_equal(np.asarray(target(inputs)["image"]),
                                  np.asarray(source(inputs)["image"]))


def test_default_configuration_from_the_spec_variable_list(tmp_path):
    # The 82 variables of a released film_net, names and shapes from the spec, saved order.
    with open(SPEC_VARIABLES) as f:
        spec = json.load(f)["variables_in_saved_order"]
    rng = np.random.default_rng(0)
    named = [(v["name"][:-len(":0")], rng.normal(0, 0.01, v["shape"]).astype("float32"))
             for v in spec]
    path = write_original_layout(tmp_path / "style", named)
    model = FILM().build_for_weights()
    load_film_saved_model(model, path)
    mapped = model.original_variables()
    assert len(mapped) == 82
    for name, value in named:
        np.testing.assert_array_equal(np.asarray(mapped[name]), value)
    assert infer_config(path) == {k: v for k, v in FILM().get_config().items()
                                  if k not in ("aux_outputs", "use_time", "residual")}


def test_missing_directory(tmp_path):
    with pytest.raises(WeightsError, match="does not exist.*Received: path="):
        load_film_saved_model(FILM(**SMALL), tmp_path / "nowhere")


def test_directory_that_is_not_a_saved_model(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_bytes(b"\x89PNG")
    with pytest.raises(WeightsError, match="not a TensorFlow SavedModel"):
        load_film_saved_model(FILM(**SMALL), tmp_path / "photos")


def test_truncated_variables_file(original_dir, tmp_path):
    broken = shutil.copytree(original_dir, tmp_path / "broken")
    data = next((broken / "variables").glob("variables.data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    target = randomised_small(seed=4)
    before = [np.array(w) for w in target.get_weights()]
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_film_saved_model(target, broken)
    for old, new in zip(before, target.get_weights()):  # nothing half-assigned
        np.testing.assert_array_equal(old, new)


def test_corrupt_saved_model_pb(original_dir, tmp_path):
    broken = shutil.copytree(original_dir, tmp_path / "broken")
    (broken / "saved_model.pb").write_bytes(b"not a protobuf at all \xff\xfe")
    with pytest.raises(WeightsError, match="Cannot read the SavedModel"):
        load_film_saved_model(FILM(**SMALL), broken)


def test_saved_model_of_another_architecture(tmp_path):
    named = [("dense/kernel", np.zeros((4, 2), "float32")), ("dense/bias", np.zeros(2, "float32"))]
    path = write_original_layout(tmp_path / "other", named)
    with pytest.raises(WeightsError, match="not a film_net SavedModel.*dense/bias"):
        load_film_saved_model(FILM(**SMALL), path)


def test_missing_extra_and_misshaped_variables_are_named(source, tmp_path):
    named = original_names_of(source)
    dropped = [(n, v) for n, v in named if n != "predict_flow/flow_predictor_0/conv_1/bias"]
    dropped.append(("feat_net/sub_extractor/cfeat_conv_9/kernel", np.zeros((3, 3, 1, 1), "float32")))
    path = write_original_layout(tmp_path / "partial", dropped)
    with pytest.raises(WeightsError) as error:
        load_film_saved_model(randomised_small(seed=1), path)
    message = str(error.value)
    assert "missing: predict_flow/flow_predictor_0/conv_1/bias" in message
    assert "unexpected: feat_net/sub_extractor/cfeat_conv_9/kernel" in message

    wider = FILM(**{**SMALL, "filters": 8})
    with pytest.raises(WeightsError, match=r"shape mismatch: feat_net/sub_extractor/cfeat_conv_0/"
                                           r"kernel \(3, 3, 3, 4\) vs emzoo \(3, 3, 3, 8\)"):
        load_film_saved_model(wider, write_original_layout(tmp_path / "full", named))


def test_emzoo_export_is_recognised(original_dir, tmp_path):
    # What emzoo.export writes beside the graph (tests/export/test_savedmodel.py: the real export).
    exported = shutil.copytree(original_dir, tmp_path / "exported")
    (exported / "assets").mkdir(exist_ok=True)
    (exported / "assets" / "emzoo_model.json").write_text('{"architecture": "film"}')
    with pytest.raises(WeightsError, match="exported by emzoo"):
        load_film_saved_model(FILM(**SMALL), exported)


def test_only_film_models(original_dir):
    import keras

    with pytest.raises(WeightsError, match="only into FILM models"):
        load_film_saved_model(keras.Sequential([keras.layers.Dense(1)]), original_dir)
