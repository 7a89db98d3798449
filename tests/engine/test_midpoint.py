"""Tests of emzoo.engine.midpoint: channels, batching and feature reuse of the midpoint engine."""

import keras
import numpy as np
import pytest

from emzoo.engine import MidpointEngine, upscale_volume
from emzoo.errors import EmzooError, UnknownModelError
from emzoo_test_helpers import MeanModel, TinyConvModel, TinyFeatureModel, random_volume


# ------------------------------------------------------------------------------------ channels
def test_rgb_model_gets_replicated_grey_and_is_averaged_back():
    volume = random_volume((3, 8, 16))
    out = upscale_volume(volume, MeanModel(channels=3), factor=2, progress=False)["array"]
    np.testing.assert_allclose(out[1], (volume[0] + volume[1]) / 2, atol=1e-6)


def test_model_with_unusable_channels_is_refused():
    model = MeanModel()
    model.channels = 2
    with pytest.raises(EmzooError, match="2-channel"):
        upscale_volume(random_volume((3, 8, 8)), model, progress=False)


def test_unknown_model_names_the_flow_baseline_too():
    with pytest.raises(UnknownModelError) as caught:
        upscale_volume(random_volume((3, 8, 8)), "flwo", progress=False)
    message = str(caught.value)
    assert "Unknown model `flwo`" in message and "dan-em" in message  # the registered names
    assert "`flow` (the optical-flow baseline" in message and "Did you mean `flow`?" in message


# ------------------------------------------------------------------------------------ batching
def test_batch_size_does_not_change_the_result():
    volume = random_volume((4, 40, 24), seed=5)
    model = TinyConvModel()
    one = upscale_volume(volume, model, factor=4, batch_size=1, progress=False)["array"]
    many = upscale_volume(volume, model, factor=4, batch_size=5, tile=16, overlap=8,
                          progress=False)["array"]
    batched = upscale_volume(volume, model, factor=4, batch_size=5, progress=False)["array"]
    np.testing.assert_allclose(one, batched, atol=1e-5)
    assert many.shape == one.shape


# ------------------------------------------------------------------------------- feature reuse
def test_feature_reuse_equals_pairwise_and_extracts_each_slice_once():
    volume = random_volume((5, 16, 24), seed=6)
    model = TinyFeatureModel()
    naive = MidpointEngine(model, 16, 24, batch_size=3, reuse_features=False)
    reused = MidpointEngine(model, 16, 24, batch_size=3)
    assert reused.reuse_features
    results = []
    for engine in (naive, reused):
        dense = {4 * z: volume[z][..., None] for z in range(5)}
        engine.fill_grid(dense, 0, 16, levels=2)
        results.append(np.stack([dense[k] for k in range(17)]))
    np.testing.assert_allclose(results[0], results[1], atol=1e-5)
    # 5 inputs + the 4 first-level midpoints; the 8 last-level midpoints are never extracted.
    assert reused.calls["extract"] == 9 and reused.calls["pairs"] == 12


def test_feature_reuse_through_upscale_volume_with_tiles():
    volume = random_volume((4, 40, 56), seed=7)
    model = TinyFeatureModel()
    args = dict(factor=4, tile=24, overlap=8, batch_size=4, progress=False)
    np.testing.assert_allclose(upscale_volume(volume, model, reuse_features=True, **args)["array"],
                               upscale_volume(volume, model, reuse_features=False, **args)["array"],
                               atol=1e-5)


def test_feature_reuse_needs_a_model_that_has_features():
    with pytest.raises(EmzooError, match="interpolate_from_features"):
        MidpointEngine(MeanModel(), 8, 8, reuse_features=True)


def test_small_film_feature_reuse_equals_pairwise():
    film = pytest.importorskip("emzoo.models.film")
    model = film.FILM(pyramid_levels=3, fusion_pyramid_levels=3, specialized_levels=1,
                      sub_levels=2, filters=4, flow_convs=[1, 1], flow_filters=[4, 4], channels=1)
    volume = random_volume((3, 18, 34), np.uint8, seed=8)  # not multiples of 4: padded
    args = dict(factor=4, batch_size=2, progress=False)
    reused = upscale_volume(volume, model, reuse_features=True, **args)["array"]
    naive = upscale_volume(volume, model, reuse_features=False, **args)["array"]
    np.testing.assert_array_equal(reused, naive)
    # And each engine midpoint equals one plain model call on the padded pair.
    engine = MidpointEngine(model, 18, 34, reuse_features=True)
    # FILM's calls are XLA-compiled by default on TensorFlow (and still match the plain call).
    assert engine.jit_compile == (keras.backend.backend() == "tensorflow")
    assert not MidpointEngine(model, 18, 34, reuse_features=False).jit_compile
    slices = {0: volume[0, ..., None] / 255.0, 2: volume[1, ..., None] / 255.0}
    middle = engine.midpoints([(0, 2)], slices)[0]
    padded = [np.pad(slices[k], ((0, 2), (0, 2), (0, 0)), mode="reflect")[None] for k in (0, 2)]
    direct = model({"x0": padded[0].astype("float32"), "x1": padded[1].astype("float32"),
                    "time": np.full((1, 1), 0.5, "float32")})["image"]
    np.testing.assert_allclose(middle, np.clip(np.asarray(direct)[0, :18, :34], 0, 1), atol=1e-5)
