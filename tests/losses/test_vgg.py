"""The frozen VGG extractor: names, shapes, grey input, weight files (Keras .h5, MatConvNet .mat),
lazy loading and the default-weights switch."""

import h5py
import keras
import numpy as np
import pytest
from keras import ops

from emzoo.errors import EmzooError, WeightsError
from emzoo.losses import vgg
from emzoo.testing import paper_loss
from emzoo.losses.perceptual import EM_VGG16_LAYERS, FILM_VGG_LAYERS
from emzoo.losses.vgg import VGGFeatureExtractor


def test_layer_names_and_shapes():
    film = VGGFeatureExtractor("vgg19", FILM_VGG_LAYERS, pooling="avg", weights=None)
    out = film(np.random.rand(2, 32, 32, 3).astype("float32"))
    assert list(out) == list(FILM_VGG_LAYERS)
    assert [tuple(v.shape) for v in out.values()] == [
        (2, 32, 32, 64), (2, 16, 16, 128), (2, 8, 8, 256), (2, 4, 4, 512), (2, 2, 2, 512)]
    em = VGGFeatureExtractor("vgg16", EM_VGG16_LAYERS, pooling="max", weights=None)
    out = em(np.random.rand(1, 32, 32, 1).astype("float32"))
    assert [tuple(v.shape) for v in out.values()] == [
        (1, 32, 32, 64), (1, 16, 16, 128), (1, 8, 8, 256), (1, 4, 4, 512)]
    assert vgg.conv_name("relu4_3") == "block4_conv3" == vgg.conv_name("conv4_3")
    with pytest.raises(EmzooError, match="no layer"):
        VGGFeatureExtractor("vgg16", ("conv5_4",), weights=None)
    with pytest.raises(EmzooError, match="pooling"):
        VGGFeatureExtractor("vgg16", ("conv1_1",), pooling="median")


def test_grey_input_is_replicated_to_rgb():
    extractor = VGGFeatureExtractor("vgg16", ("relu2_2",), weights=None)
    grey = np.random.rand(1, 16, 16, 1).astype("float32")
    a = extractor(grey)["relu2_2"]
    b = extractor(np.repeat(grey, 3, axis=-1))["relu2_2"]
    np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(b), rtol=1e-6)


def test_weights_load_lazily_on_first_call(monkeypatch, tmp_path):
    monkeypatch.setenv("EMZOO_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("EMZOO_OFFLINE", "1")
    monkeypatch.delenv("EMZOO_VGG_WEIGHTS", raising=False)
    loss = paper_loss("tsain", vgg_weights="imagenet")        # nothing is read here
    extractor = loss.terms["feature"].extractor
    assert not extractor.loaded
    y = np.zeros((1, 32, 32, 1), "float32")
    with pytest.raises(WeightsError, match="vgg16_weights_tf_dim_ordering_tf_kernels_notop"):
        loss(y, y)


def test_default_weights_follow_env_and_module_setting(monkeypatch):
    monkeypatch.setenv("EMZOO_VGG_WEIGHTS", "random")
    assert vgg.default_weights() == "random"
    params = vgg.load_weights("vgg16", "default")
    np.testing.assert_array_equal(params["block1_conv1"][0], vgg.random_weights("vgg16")["block1_conv1"][0])
    vgg.set_default_weights("/no/such/file.h5")
    try:
        with pytest.raises(WeightsError, match="not found"):
            vgg.load_weights("vgg16", "default")
    finally:
        vgg.set_default_weights(None)
    monkeypatch.delenv("EMZOO_VGG_WEIGHTS")
    assert vgg.default_weights() == "imagenet"


def _keras_vgg16_features(model, images, layer):
    sub = keras.Model(model.input, model.get_layer(layer).output)
    caffe = keras.applications.vgg16.preprocess_input(images * 255.0)   # RGB->BGR, minus mean
    return ops.convert_to_numpy(sub(caffe))


@pytest.mark.parametrize("layout", ["legacy", "keras3"])
def test_keras_weight_files_reproduce_keras_applications_vgg16(tmp_path, layout):
    model = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    if layout == "legacy":   # the layout of the Keras Applications ImageNet files
        from keras.src.legacy.saving import legacy_h5_format

        path = tmp_path / "vgg16_notop.h5"
        with h5py.File(path, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, model)
    else:
        path = tmp_path / "vgg16.weights.h5"
        model.save_weights(path)
    images = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    extractor = VGGFeatureExtractor("vgg16", EM_VGG16_LAYERS, pooling="max", weights=str(path),
                                    preprocessing="imagenet")
    ours = extractor(images)
    for name, keras_name in (("relu1_2", "block1_conv2"), ("relu4_3", "block4_conv3")):
        expected = _keras_vgg16_features(model, images, keras_name)
        got = ops.convert_to_numpy(ours[name])
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_matconvnet_file_is_read_and_flipped_to_bgr(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    params = vgg.random_weights("vgg19", seed=3)
    index_of = {i: name for name, i in vgg.MATCONVNET_VGG19_INDEX.items()}
    layers = np.empty((1, 37), dtype=object)
    for i in range(37):
        if i in index_of:
            kernel, bias = params[index_of[i]]
            weights = np.empty((1, 2), dtype=object)
            weights[0, 0], weights[0, 1] = kernel, bias.reshape(1, -1)
            layers[0, i] = {"name": index_of[i], "type": "conv", "weights": weights}
        else:
            layers[0, i] = {"name": f"other{i}", "type": "relu", "weights": np.zeros((0, 0))}
    path = tmp_path / "imagenet-vgg-verydeep-19.mat"
    scipy_io.savemat(path, {"layers": layers})
    loaded = vgg.load_weights("vgg19", str(path))
    np.testing.assert_array_equal(loaded["block1_conv1"][0], params["block1_conv1"][0][:, :, ::-1])
    np.testing.assert_array_equal(loaded["block5_conv2"][0], params["block5_conv2"][0])
    np.testing.assert_array_equal(loaded["block3_conv4"][1], params["block3_conv4"][1])


def test_files_that_are_not_vgg_weights_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(WeightsError, match="Cannot read"):
        vgg.load_weights("vgg16", str(bad))
    other = tmp_path / "other.weights.h5"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save_weights(other)
    with pytest.raises(WeightsError, match="does not hold VGG16"):
        vgg.load_weights("vgg16", str(other))
