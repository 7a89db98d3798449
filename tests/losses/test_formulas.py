"""Loss formulas against NumPy: Gram, style, style balance (values, signs, gradient), pixel, schedules.

Backend-agnostic (no VGG weights, no files): also run with ``KERAS_BACKEND=jax``.
"""

import keras
import numpy as np
import pytest
from keras import ops

from emzoo.errors import EmzooError
from emzoo.losses import CharbonnierLoss, L1Loss, L2Loss, PiecewiseConstant
from emzoo.testing import paper_loss
from emzoo_test_helpers import AverageNet
from emzoo.losses.perceptual import feature_reconstruction_distance, film_perceptual_distance
from emzoo.losses.gram import gram_matrix
from emzoo.losses.style import style_balance_distance, style_distance

RNG = np.random.default_rng(1)
LAYERS = ("a", "b")


# ------------------------------------------------------------------------------ NumPy references
def np_gram(f, normalisation="chw"):
    b, h, w, c = f.shape
    flat = f.reshape(b, h * w, c).astype("float64")
    g = np.einsum("bpi,bpj->bij", flat, flat)
    return g / (h * w * c if normalisation == "chw" else h * w)


def np_style(ga, gb, weights=None, reduction="mean"):
    weights = weights or [1.0] * len(ga)
    out = 0.0
    for w, a, b in zip(weights, ga, gb):
        sq = (a - b) ** 2
        out = out + w * (sq.mean(axis=(1, 2)) if reduction == "mean" else sq.sum(axis=(1, 2)))
    return out


def np_style_balance(gp, gt, g0, g1, betas=(0.1, 1.0, 0.1)):
    out = 0.0
    for beta, gf in zip(betas, (g0, gt, g1)):
        pred_to_frame, true_to_frame = np_style(gp, gf), np_style(gt, gf)
        out = out + beta * np.sign(pred_to_frame - true_to_frame) * pred_to_frame
    return out


def features(batch=2, shapes=((8, 8, 4), (4, 4, 6))):
    return {name: RNG.normal(size=(batch,) + s).astype("float32") for name, s in zip(LAYERS, shapes)}


def grams_of(feats, normalisation="chw"):
    return {k: gram_matrix(ops.convert_to_tensor(v), normalisation) for k, v in feats.items()}


def close(a, b, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(ops.convert_to_numpy(a), "float64"), b, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------------------- Gram
@pytest.mark.parametrize("normalisation", ["chw", "hw"])
def test_gram_matrix_matches_numpy(normalisation):
    f = RNG.normal(size=(3, 5, 7, 4)).astype("float32")
    close(gram_matrix(f, normalisation), np_gram(f, normalisation))


def test_gram_matrix_known_value():
    f = np.ones((1, 2, 2, 3), "float32")
    close(gram_matrix(f), np.full((1, 3, 3), 1 / 3))
    with pytest.raises(EmzooError, match="normalisation"):
        gram_matrix(f, "hwc")


# -------------------------------------------------------------------------------------- style
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_style_distance_matches_numpy(reduction):
    fa, fb = features(), features()
    expected = np_style([np_gram(fa[k]) for k in LAYERS], [np_gram(fb[k]) for k in LAYERS],
                        reduction=reduction)
    close(style_distance(grams_of(fa), grams_of(fb), LAYERS, reduction=reduction), expected)


def test_film_style_formula_divides_features_by_255_and_weights_layers():
    fa, fb = features(), features()
    weights = [0.5, 3.0]
    expected = np_style([np_gram(fa[k] / 255, "hw") for k in LAYERS],
                        [np_gram(fb[k] / 255, "hw") for k in LAYERS], weights)
    got = style_distance({k: gram_matrix(v / 255.0, "hw") for k, v in fa.items()},
                         {k: gram_matrix(v / 255.0, "hw") for k, v in fb.items()}, LAYERS, weights)
    close(got, expected, rtol=1e-4, atol=1e-14)


def test_film_perceptual_formula():
    fa, fb = features(), features()
    weights = [0.25, 2.0]
    expected = sum(w * np.abs(fa[k] - fb[k]).mean(axis=(1, 2, 3)) for w, k in zip(weights, LAYERS))
    close(film_perceptual_distance(fa, fb, LAYERS, weights), expected / 255)


def test_feature_reconstruction_is_squared_norm_over_chw():
    fa, fb = features(), features()
    expected = sum(((fa[k] - fb[k]) ** 2).sum(axis=(1, 2, 3)) / np.prod(fa[k].shape[1:])
                   for k in LAYERS)
    close(feature_reconstruction_distance(fa, fb, LAYERS), expected)


# ------------------------------------------------------------------------------ style balance
def test_style_balance_matches_numpy_reference():
    fp, ft, f0, f1 = features(4), features(4), features(4), features(4)
    expected = np_style_balance(*[[np_gram(f[k]) for k in LAYERS] for f in (fp, ft, f0, f1)])
    got = style_balance_distance(grams_of(fp), grams_of(ft), grams_of(f0), grams_of(f1), LAYERS)
    close(got, expected, rtol=1e-4)


def _grams(*values):
    """One-layer grams (B, 1, 1) from per-sample scalars."""
    return {"a": ops.convert_to_tensor(np.asarray(values, "float32").reshape(-1, 1, 1))}


def test_style_balance_sign_is_plus_when_prediction_is_farther_and_minus_when_closer():
    # x0 style 0, ground truth style 1. Sample 0: prediction at 3 (farther from x0 than the
    # truth: +); sample 1: prediction at 0.5 (closer: -). x1 == ground truth.
    g0, gt, g1, gp = _grams(0, 0), _grams(1, 1), _grams(1, 1), _grams(3, 0.5)
    only_x0 = style_balance_distance(gp, gt, g0, g1, ("a",), betas=(1.0, 0.0, 0.0))
    close(only_x0, [+9.0, -0.25])
    only_truth = style_balance_distance(gp, gt, g0, g1, ("a",), betas=(0.0, 1.0, 0.0))
    close(only_truth, [4.0, 0.25])            # L_style(y, y) = 0: always +, the plain style loss
    full = style_balance_distance(gp, gt, g0, g1, ("a",))
    # x1 equals the truth, so L_style(y, x1) = 0 and the x1 term is + for both samples.
    close(full, [0.1 * 9 + 4 + 0.1 * 4, 0.1 * -0.25 + 0.25 + 0.1 * 0.25])


def _gradient(fn, value):
    value = np.asarray(value, "float32")
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        var = tf.Variable(value)
        with tf.GradientTape() as tape:
            out = ops.sum(fn(var))
        return tape.gradient(out, var).numpy()
    if keras.backend.backend() == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: ops.sum(fn(v)))(value))
    pytest.skip("gradient helper covers tensorflow and jax")


def test_style_balance_gradient_treats_sign_as_constant():
    g0, gt, g1 = _grams(0, 0), _grams(1, 1), _grams(2, 2)
    pred = np.asarray([3.0, 0.5], "float32").reshape(2, 1, 1)

    def loss(p):
        return style_balance_distance({"a": p}, gt, g0, g1, ("a",))

    grad = _gradient(loss, pred).reshape(-1)
    p = pred.reshape(-1)
    expected = np.zeros(2)
    for beta, frame in zip((0.1, 1.0, 0.1), (0.0, 1.0, 2.0)):
        sign = np.sign((p - frame) ** 2 - (1.0 - frame) ** 2)
        expected += beta * sign * 2 * (p - frame)      # d/dp of sign * (p - frame)^2, sign fixed
    np.testing.assert_allclose(grad, expected, rtol=1e-5)
    assert grad[1] < 0 < grad[0]


# ------------------------------------------------------------------------------------- pixels
def test_pixel_losses_match_numpy():
    y = RNG.random((3, 6, 5, 2)).astype("float32")
    p = RNG.random((3, 6, 5, 2)).astype("float32")
    d = p.astype("float64") - y
    close(L1Loss()(y, p), np.abs(d).mean())
    close(L2Loss()(y, p), (d ** 2).mean())
    close(CharbonnierLoss()(y, p), np.sqrt(d ** 2 + 1e-12).mean())
    close(CharbonnierLoss(epsilon=1e-2, square_epsilon=False)(y, p), np.sqrt(d ** 2 + 1e-2).mean())
    # eps matters where the images agree: sqrt(eps^2) = eps.
    close(CharbonnierLoss(epsilon=1e-3)(y, y), 1e-3, rtol=1e-3)


def test_pixel_loss_reduces_per_sample_then_batch():
    y = np.zeros((2, 2, 2, 1), "float32")
    p = np.stack([np.full((2, 2, 1), 1.0), np.full((2, 2, 1), 3.0)]).astype("float32")
    close(L1Loss(reduction="none")(y, p), [1.0, 3.0])
    close(L1Loss()(y, p), 2.0)


# ---------------------------------------------------------------------------------- schedules
def test_piecewise_constant_switches_after_the_boundary():
    schedule = PiecewiseConstant([10, 20], [1.0, 0.25, 4.0])
    got = [float(ops.convert_to_numpy(schedule(step))) for step in (0, 10, 11, 20, 21, 10**7)]
    assert got == [1.0, 1.0, 0.25, 0.25, 4.0, 4.0]
    assert [schedule.value_at(s) for s in (10, 11, 21)] == [1.0, 0.25, 4.0]
    with pytest.raises(EmzooError, match="schedule"):
        PiecewiseConstant([5], [1.0])


def test_film_schedule_and_its_scale():
    loss = paper_loss("film", vgg_weights=None)
    assert loss.uses_step and not loss.uses_frames
    assert loss.weights["film_vgg"].get_config() == {"boundaries": [1_500_000], "values": [1.0, 0.25]}
    assert loss.weights["film_style"].get_config() == {"boundaries": [1_500_000], "values": [0.0, 40.0]}
    assert loss.weights["l1"] == 1.0
    short = paper_loss("film", vgg_weights=None, schedule_scale=1e-4)
    assert short.weights["film_style"].boundaries == [150]
    step = keras.Variable(150, dtype="int64", trainable=False)
    short.bind_step(step)
    assert float(ops.convert_to_numpy(short.weight_of("film_style"))) == 0.0
    step.assign(151)
    assert float(ops.convert_to_numpy(short.weight_of("film_style"))) == 40.0
    assert float(ops.convert_to_numpy(short.weight_of("film_vgg"))) == 0.25


def test_paper_totals_have_the_papers_terms_and_weights():
    tsain, ssan, dan = (paper_loss(a, vgg_weights=None) for a in ("tsain", "ssan", "dan"))
    assert tsain.weights == {"l2": 1.0, "feature": 1.0, "style": 1e6}
    assert ssan.weights == {"style_balance": 1e6, "feature": 1.0, "charbonnier": 1.0}
    assert dan.weights == {"style": 1e6, "feature": 1.0, "charbonnier": 1.0}
    assert ssan.uses_frames and not tsain.uses_frames and not dan.uses_frames
    assert not ssan.uses_step
    assert ssan.terms["style_balance"].betas == (0.1, 1.0, 0.1)
    assert ssan.terms["charbonnier"].epsilon == 1e-6
    with pytest.warns(UserWarning, match="L1"):   # an architecture without a paper loss
        assert isinstance(AverageNet().paper_loss(), L1Loss)


def test_frame_losses_refuse_to_run_without_frames():
    loss = paper_loss("ssan", vgg_weights=None)
    y = np.zeros((1, 32, 32, 1), "float32")
    with pytest.raises(EmzooError, match="input frames"):
        loss(y, y)


def test_combined_loss_round_trips_through_its_config():
    loss = paper_loss("film", vgg_weights=None, schedule_scale=1e-3)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert again.get_config() == loss.get_config()
    assert again.weights["film_style"].boundaries == [1500]
    ssan = paper_loss("ssan", vgg_weights=None)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(ssan))
    assert again.uses_frames and again.get_config() == ssan.get_config()


def test_context_runs_the_prediction_alone_and_the_data_images_batched():
    from emzoo.losses import LossContext

    calls = []

    class Doubler:
        def __call__(self, images):
            calls.append(int(images.shape[0]))
            return {"f": images * 2.0}

    stub = Doubler()
    y, p, x0, x1 = (RNG.random((2, 4, 4, 1)).astype("float32") for _ in range(4))
    ctx = LossContext(y, p, {"x0": x0, "x1": x1})
    ctx.request(stub, ("pred", "true", "x0", "x1"))
    close(ctx.features(stub, "x1")["f"], 2 * x1)
    close(ctx.features(stub, "pred")["f"], 2 * p)
    close(ctx.features(stub, "true")["f"], 2 * y)
    close(ctx.features(stub, "x0")["f"], 2 * x0)
    assert sorted(calls) == [2, 6]          # prediction alone; truth and frames in one pass
