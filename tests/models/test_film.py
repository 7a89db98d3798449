"""Tests of the FILM architecture: a NumPy re-implementation of film_net, parameter count, names,
feature reuse, time handling, aux outputs, configs and weights."""

import json
import pathlib

import numpy as np
import pytest

import emzoo
from emzoo import testing
from emzoo.errors import EmzooError
from emzoo.models.film import FILM

SMALL = dict(pyramid_levels=3, fusion_pyramid_levels=3, specialized_levels=1, sub_levels=2,
             filters=4, flow_convs=[1, 1], flow_filters=[4, 4])
# The 82 variables of a released film_net SavedModel (copy of shared/specs/film_saved_model_variables.json).
SPEC_VARIABLES = pathlib.Path(__file__).with_name("film_saved_model_variables.json")


# ---------------------------------------------------------------------------------------------
# An independent NumPy film_net, written from shared/specs/film.md §1 (no emzoo code used).
def np_conv(x, kernel, bias):
    kh, kw = kernel.shape[:2]
    # TF 'same': the extra row/column of an even kernel goes at the bottom/right.
    top, left = (kh - 1) // 2, (kw - 1) // 2
    padded = np.pad(x, ((0, 0), (top, kh - 1 - top), (left, kw - 1 - left), (0, 0)))
    h, w = x.shape[1:3]
    out = np.zeros(x.shape[:3] + (kernel.shape[3],), np.float64)
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("bhwc,co->bhwo", padded[:, i:i + h, j:j + w], kernel[i, j])
    return out + bias


def np_lrelu(x):
    return np.where(x > 0, x, 0.2 * x)


def np_pool(x):
    h, w = x.shape[1] // 2, x.shape[2] // 2
    x = x[:, :2 * h, :2 * w]
    return 0.25 * (x[:, 0::2, 0::2] + x[:, 1::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 1::2])


def np_resize_bilinear(x, size):
    def axis_weights(n_in, n_out):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, None)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    y0, y1, wy = axis_weights(x.shape[1], size[0])
    x0, x1, wx = axis_weights(x.shape[2], size[1])
    rows = x[:, y0] * (1 - wy)[None, :, None, None] + x[:, y1] * wy[None, :, None, None]
    return rows[:, :, x0] * (1 - wx)[None, None, :, None] + rows[:, :, x1] * wx[None, None, :, None]


def np_resize_nearest(x, size):
    rows = np.minimum(np.floor((np.arange(size[0]) + 0.5) * x.shape[1] / size[0]), x.shape[1] - 1)
    cols = np.minimum(np.floor((np.arange(size[1]) + 0.5) * x.shape[2] / size[1]), x.shape[2] - 1)
    return x[:, rows.astype(int)][:, :, cols.astype(int)]


def np_warp(image, flow):
    b, h, w, _ = image.shape
    out = np.zeros_like(image)
    for n in range(b):
        for y in range(h):
            for x in range(w):
                sy = min(max(y + flow[n, y, x, 1], 0), h - 1)
                sx = min(max(x + flow[n, y, x, 0], 0), w - 1)
                y0, x0 = int(np.floor(sy)), int(np.floor(sx))
                y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
                fy, fx = sy - y0, sx - x0
                out[n, y, x] = ((1 - fy) * (1 - fx) * image[n, y0, x0] + (1 - fy) * fx * image[n, y0, x1]
                                + fy * (1 - fx) * image[n, y1, x0] + fy * fx * image[n, y1, x1])
    return out


def np_film(weights, config, x0, x1, t=0.5):
    """film_net from the spec; ``weights`` maps original variable names to arrays."""
    levels, fusion_levels = config["pyramid_levels"], config["fusion_pyramid_levels"]
    sub_levels, specialized = config["sub_levels"], config["specialized_levels"]

    def conv(prefix, x):
        return np_conv(x, weights[prefix + "/kernel"], weights[prefix + "/bias"])

    def pyramid(image):
        out = [image.astype(np.float64)]
        for _ in range(levels - 1):
            out.append(np_pool(out[-1]))
        return out

    def features(images):
        trees = []
        for i, image in enumerate(images):
            maps, x = [], image
            for j in range(min(levels - i, sub_levels)):
                if j:
                    x = np_pool(x)
                x = np_lrelu(conv(f"feat_net/sub_extractor/cfeat_conv_{2 * j}", x))
                x = np_lrelu(conv(f"feat_net/sub_extractor/cfeat_conv_{2 * j + 1}", x))
                maps.append(x)
            trees.append(maps)
        return [np.concatenate([trees[i - j][j] for j in range(min(i + 1, sub_levels))], -1)
                for i in range(levels)]

    def predictor(level, a, b):
        name = f"flow_predictor_{level}" if level < specialized else "flow_predictor_shared"
        convs = sorted({k.split("/")[2] for k in weights if name in k}, key=lambda c: int(c[5:]))
        x = np.concatenate([a, b], -1)
        for c in convs[:-1]:
            x = np_lrelu(conv(f"predict_flow/{name}/{c}", x))
        return conv(f"predict_flow/{name}/{convs[-1]}", x)

    def flows(fa, fb):
        v = predictor(levels - 1, fa[-1], fb[-1])
        out = [v]
        for i in reversed(range(levels - 1)):
            v = np_resize_bilinear(2 * v, fa[i].shape[1:3])
            v = v + predictor(i, fa[i], np_warp(fb[i], v))
            out.insert(0, v)
        return out

    im0, im1 = pyramid(x0), pyramid(x1)
    f0, f1 = features(im0), features(im1)
    flow01, flow10 = flows(f0, f1), flows(f1, f0)
    aligned = []
    for i in range(fusion_levels):
        w0 = np_warp(np.concatenate([im0[i], f0[i]], -1), t * flow10[i])
        w1 = np_warp(np.concatenate([im1[i], f1[i]], -1), (1 - t) * flow01[i])
        aligned.append(np.concatenate([w0, w1, t * flow10[i], (1 - t) * flow01[i]], -1))
        if i == 0:
            x0_warped = w0[..., :x0.shape[-1]]
    net = aligned[-1]
    index = 0
    names = {}
    for i in range(fusion_levels - 1):
        for k in range(3):
            names[(i, k)] = "fusion/conv2d" + (f"_{index}" if index else "")
            index += 1
    for i in reversed(range(fusion_levels - 1)):
        net = conv(names[(i, 0)], np_resize_nearest(net, aligned[i].shape[1:3]))
        net = np.concatenate([aligned[i], net], -1)
        net = np_lrelu(conv(names[(i, 1)], net))
        net = np_lrelu(conv(names[(i, 2)], net))
    return conv(f"fusion/conv2d_{index}", net), x0_warped


def _randomise(model, seed=1, scale=0.3):
    """Non-zero biases and larger kernels so flows are far from zero (warps really move)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.normal(0, scale, variable.shape).astype("float32"))


@pytest.mark.parametrize("height,width,channels", [(16, 16, 3), (18, 22, 1)])
def test_matches_numpy_film_net(height, width, channels):
    model = FILM(**SMALL, channels=channels, aux_outputs=True)
    inputs, _ = testing.random_inputs(2, height, width, channels)
    model(inputs)
    _randomise(model)
    out = model(inputs)
    weights = {k: np.asarray(v, np.float64) for k, v in model.original_variables().items()}
    expected, x0_warped = np_film(weights, model.get_config(), inputs["x0"], inputs["x1"])
    assert np.abs(out["forward_flow_pyramid"][0]).max() > 0.5  # the warps really displace
    np.testing.assert_allclose(np.asarray(out["image"]), expected, atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(out["x0_warped"]), x0_warped, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
def test_default_parameter_count_and_original_names():
    model = FILM().build_for_weights()  # builds at 64 x 64
    assert model.count_params() == 34_436_667
    assert model.size_multiple == 64 and model.channels == 3
    with open(SPEC_VARIABLES) as f:
        spec = json.load(f)["variables_in_saved_order"]
    expected = [(v["name"][:-len(":0")], tuple(v["shape"])) for v in spec]
    mapped = model.original_variables()
    assert [(name, tuple(v.shape)) for name, v in mapped.items()] == expected
    assert len({id(v) for v in mapped.values()}) == len(model.weights) == 82


def test_small_config_forward_backward():
    model = FILM(**SMALL)
    inputs, y = testing.random_inputs(2, 16, 16, 3)
    out = model(inputs)
    assert sorted(out) == ["image"]
    assert tuple(out["image"].shape) == (2, 16, 16, 3)
    before = [np.array(w) for w in model.get_weights()]
    # Eagerly: tracing a whole training graph costs far more than two tiny steps.
    model.compile(optimizer="adam", loss="mean_absolute_error", metrics=[], run_eagerly=True)
    losses = [float(model.train_on_batch(inputs, y)) for _ in range(2)]
    assert np.isfinite(losses).all()
    assert all(not np.allclose(u, v) for u, v in zip(before, model.get_weights()))


def test_aux_outputs_shapes():
    model = FILM(**SMALL, aux_outputs=True)
    inputs, _ = testing.random_inputs(1, 16, 24, 3)
    out = model(inputs)
    assert tuple(out["x0_warped"].shape) == tuple(out["x1_warped"].shape) == (1, 16, 24, 3)
    for key, count in (("forward_residual_flow_pyramid", 3), ("backward_residual_flow_pyramid", 3),
                       ("forward_flow_pyramid", 3), ("backward_flow_pyramid", 3)):
        assert [tuple(f.shape) for f in out[key]] == [
            (1, 16 >> i, 24 >> i, 2) for i in range(count)]
    # The coarsest cumulative flow is the coarsest residual.
    np.testing.assert_array_equal(np.asarray(out["forward_flow_pyramid"][-1]),
                                  np.asarray(out["forward_residual_flow_pyramid"][-1]))


def test_time_ignored_by_default_and_used_on_request():
    inputs, _ = testing.random_inputs(2, 16, 16, 3)
    early = dict(inputs, time=np.full((2, 1), 0.1, np.float32))
    model = FILM(**SMALL)
    model(inputs)
    _randomise(model)
    np.testing.assert_array_equal(np.asarray(model(inputs)["image"]),
                                  np.asarray(model(early)["image"]))
    timed = FILM(**SMALL, use_time=True)
    timed(inputs)
    timed.set_weights(model.get_weights())
    np.testing.assert_allclose(np.asarray(timed(inputs)["image"]),
                               np.asarray(model(inputs)["image"]), atol=1e-6)
    assert not np.allclose(np.asarray(timed(early)["image"]), np.asarray(timed(inputs)["image"]),
                           atol=1e-3)
    # t = 0 means frame 0 is not moved at all.
    zero = dict(inputs, time=np.zeros((2, 1), np.float32))
    timed.aux_outputs = True
    np.testing.assert_allclose(np.asarray(timed(zero)["x0_warped"]), inputs["x0"], atol=1e-6)


def test_extract_then_interpolate_equals_call():
    model = FILM(**SMALL, aux_outputs=True)
    inputs, _ = testing.random_inputs(2, 16, 16, 3)
    model(inputs)
    _randomise(model)
    f0, f1 = model.extract(inputs["x0"]), model.extract(inputs["x1"])
    assert len(f0["images"]) == len(f0["features"]) == 3
    testing.assert_trees_close(model.interpolate_from_features(f0, f1, inputs["time"]),
                               model(inputs), atol=1e-6, rtol=0)
    # Features of several frames batch per level: pairs (a, b) and (b, c) in one call.
    frames = np.concatenate([inputs["x0"], inputs["x1"]], axis=0)  # 4 frames
    feats = model.extract(frames)
    first = {k: [level[:2] for level in v] for k, v in feats.items()}
    second = {k: [level[2:] for level in v] for k, v in feats.items()}
    testing.assert_trees_close(model.interpolate_from_features(first, second, inputs["time"]),
                               model(inputs), atol=1e-5)


def test_two_by_two_fusion_conv_pads_bottom_right():
    model = FILM(**SMALL, channels=1)
    model(testing.random_inputs(1, 16, 16, 1)[0])
    conv = model.fusion.convs[0]
    kernel = np.zeros(conv.kernel.shape, np.float32)
    kernel[1, 1, 0, 0] = 1.0  # output[y, x] = input[y + 1, x + 1]
    conv.kernel.assign(kernel)
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    x = np.concatenate([x, np.zeros((1, 4, 4, conv.kernel.shape[2] - 1), np.float32)], -1)
    out = np.asarray(conv(x))[0, :, :, 0]
    np.testing.assert_array_equal(out[:3, :3], np.arange(16).reshape(4, 4)[1:, 1:])
    assert not out[3].any() and not out[:, 3].any()


def test_channels_one_and_any_size_above_multiple():
    model = FILM(**SMALL, channels=1)
    inputs, _ = testing.random_inputs(1, 13, 21, 1)  # not multiples of 4: floor-halving levels
    assert tuple(model(inputs)["image"].shape) == (1, 13, 21, 1)


def test_too_small_input_is_a_clear_error():
    model = FILM(**SMALL)
    with pytest.raises(EmzooError, match="height >= 4"):
        model(testing.random_inputs(1, 3, 16, 3)[0])


@pytest.mark.parametrize("bad", [dict(fusion_pyramid_levels=4), dict(flow_convs=[1]),
                                 dict(filters=0), dict(channels=2)])
def test_invalid_arguments(bad):
    with pytest.raises(EmzooError, match="Received"):
        FILM(**{**SMALL, **bad})


def test_config_round_trip_and_serialization():
    model = FILM(**SMALL, channels=1, aux_outputs=True, use_time=True)
    config = model.get_config()
    assert json.loads(json.dumps(config)) == config
    assert sorted(config) == sorted(set(FILM.config_keys()))
    assert FILM.from_config(config).get_config() == config
    testing.check_serialization(model)


def test_weights_round_trip(tmp_path):
    model = FILM(**SMALL)
    inputs, _ = testing.random_inputs(1, 16, 16, 3)
    model(inputs)
    _randomise(model)
    testing.check_weights_round_trip(model, inputs, tmp_path)


def test_registered_architecture():
    assert "film" in emzoo.zoo.architectures()
    assert emzoo.zoo.get_architecture("film") is FILM
    assert FILM().get_config()["pyramid_levels"] == 7
