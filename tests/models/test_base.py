"""The Interpolator base class: integer frames in predict, and summary() output shapes."""

import numpy as np
import pytest

import emzoo
from emzoo import testing
from emzoo.errors import EmzooError
from emzoo.models.film import FILM

SMALL_FILM = dict(pyramid_levels=3, fusion_pyramid_levels=3, specialized_levels=1, sub_levels=2,
                  filters=4, flow_convs=[1, 1], flow_filters=[4, 4], channels=1)


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_predict_scales_unsigned_integer_frames_by_their_range(dtype):
    model = FILM(**SMALL_FILM)
    inputs, _ = testing.random_inputs(2, 16, 16, 1, seed=3)
    top = np.iinfo(dtype).max
    frames = {k: np.round(v * top).astype(dtype) if k != "time" else v for k, v in inputs.items()}
    scaled = {k: v.astype("float32") / top if k != "time" else v for k, v in frames.items()}
    expected = np.asarray(model.predict(scaled, verbose=0)["image"])
    got = np.asarray(model.predict(frames, verbose=0)["image"])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(np.asarray(model(frames)["image"]), expected, atol=1e-6)


def test_signed_integer_frames_are_refused_with_what_to_pass():
    model = FILM(**SMALL_FILM)
    inputs, _ = testing.random_inputs(1, 16, 16, 1)
    inputs["x1"] = (inputs["x1"] * 100).astype("int16")
    with pytest.raises(EmzooError, match=r"float32 frames in \[0, 1\].*Received: dtype='int16'"):
        model.predict(inputs, verbose=0)


@pytest.mark.parametrize("name", ["default", pytest.param("tsain", marks=pytest.mark.slow)])
def test_summary_shows_output_shapes(name, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps Keras' table to the terminal width
    model = emzoo.load(name, weights=None, compile=False)
    printed = []
    model.summary(line_length=150, print_fn=lambda line, **kwargs: printed.append(line))
    text = "\n".join(printed)
    assert "?" not in text, text
    assert f"(None, 256, 256, {model.channels})" in text, text
