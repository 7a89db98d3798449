"""Paper losses inside Keras ``fit`` through the Interpolator contract (random VGG weights, 16x16).

Checks that every paper total trains (finite loss, weights move), that the style-balance loss gets
the input frames inside the compiled train step, and that FILM's schedule reads the optimizer's
step inside it (the loss switches at the boundary)."""

import keras
import numpy as np
import pytest
from keras import ops

from emzoo.testing import paper_loss
from emzoo_test_helpers import AverageNet

pytestmark = pytest.mark.tf_only


def batch(channels=1, size=16, n=2, seed=0):
    rng = np.random.default_rng(seed)
    x0, y, x1 = (rng.random((n, size, size, channels)).astype("float32") for _ in range(3))
    return {"x0": x0, "x1": x1, "time": np.full((n, 1), 0.5, "float32")}, y


def train_and_check_it_moves(model, x, y):
    """One more step at a real learning rate (same compiled function): finite, weights move."""
    before = model.refine.kernel.numpy().copy()
    model.optimizer.learning_rate.assign(1e-3)
    value = model.train_on_batch(x, y)
    assert np.isfinite(float(value[0] if isinstance(value, (list, tuple)) else value))
    assert not np.allclose(model.refine.kernel.numpy(), before)


# FILM and SSAN train in the two tests below (same compiled train step as fit), so each paper
# loss is compiled once in this file.
@pytest.mark.parametrize("architecture,channels", [("tsain", 1), ("dan", 1)])
def test_paper_loss_trains_with_fit(architecture, channels):
    model = AverageNet(channels=channels)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=paper_loss(architecture, vgg_weights=None), metrics=[])
    x, y = batch(channels)
    model.build_for_weights()
    before = model.refine.kernel.numpy().copy()
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    losses = history.history["loss"]
    assert all(np.isfinite(losses)), losses
    assert not np.allclose(model.refine.kernel.numpy(), before)


def test_style_balance_gets_the_frames_inside_fit():
    model = AverageNet()
    loss = paper_loss("ssan", vgg_weights=None)
    model.compile(optimizer=keras.optimizers.Adam(0.0), loss=loss, metrics=[])  # weights stay put
    x, y = batch(seed=1)
    reported = model.train_on_batch(x, y)
    reported = reported[0] if isinstance(reported, (list, tuple)) else reported
    expected = loss.call_with_frames(x, y, model(x)["image"])
    np.testing.assert_allclose(float(reported), float(ops.convert_to_numpy(expected)), rtol=1e-4)
    # The frames matter: swapping in other frames changes the loss.
    other = dict(x, x0=x["x1"], x1=np.zeros_like(x["x1"]))
    assert abs(float(ops.convert_to_numpy(loss.call_with_frames(other, y, model(x)["image"])))
               - float(reported)) > 1e-3 * abs(float(reported))
    train_and_check_it_moves(model, x, y)


def test_film_schedule_switches_inside_the_compiled_train_step():
    model = AverageNet(channels=3)
    loss = paper_loss("film", vgg_weights=None, schedule_scale=1e-6)   # boundary: step 2
    model.compile(optimizer=keras.optimizers.Adam(0.0), loss=loss, metrics=[])
    x, y = batch(3, seed=2)
    terms = {k: float(ops.convert_to_numpy(v))
             for k, v in loss.term_values(y, model(x)["image"], x).items()}  # (step 0 weights)
    reported = []
    for _ in range(4):   # optimizer steps 0, 1, 2, 3: the weights switch once step > 2
        value = model.train_on_batch(x, y)
        reported.append(float(value[0] if isinstance(value, (list, tuple)) else value))
    assert int(model.optimizer.iterations.numpy()) == 4
    l1, vgg = terms["l1"], terms["film_vgg"]
    assert terms["film_style"] == 0.0
    model.optimizer.iterations.assign(3)
    after = {k: float(ops.convert_to_numpy(v))
             for k, v in loss.term_values(y, model(x)["image"], x).items()}
    unweighted_style = after["film_style"] / 40.0
    assert unweighted_style > 0
    np.testing.assert_allclose(reported[:3], [l1 + vgg] * 3, rtol=1e-4)
    np.testing.assert_allclose(reported[3], l1 + 0.25 * vgg + 40.0 * unweighted_style, rtol=1e-4)
    train_and_check_it_moves(model, x, y)


MIRRORED_SCRIPT = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from emzoo.testing import paper_loss, random_inputs
from emzoo_test_helpers import AverageNet
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {}
for arch in ("ssan", "tsain"):
    x, y = random_inputs(4, 16, 16, 1, seed=3)
    with strategy.scope():
        model = AverageNet(channels=1)
        loss = paper_loss(arch, vgg_weights=None)
        model.compile(optimizer=keras.optimizers.Adam(0.0), loss=loss, metrics=[])
    reported = model.fit(x, y, batch_size=4, epochs=1, verbose=0).history["loss"][0]
    image = model(x)["image"]
    reference = loss.call_with_frames(x, y, image) if loss.uses_frames else loss(y, image)
    out[arch] = [reported, float(reference)]
print(json.dumps(out))
"""


@pytest.mark.slow
def test_losses_are_scaled_once_under_mirrored_strategy():
    """Two replicas report the single-device loss: frame-aware (SSAN) and plain (TSAIN) paths."""
    import json
    import subprocess
    import sys

    from emzoo_test_helpers import subprocess_env  # the child imports the helpers too

    result = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], env=subprocess_env(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    values = json.loads(result.stdout.strip().splitlines()[-1])
    for arch, (reported, reference) in values.items():
        np.testing.assert_allclose(reported, reference, rtol=1e-4, err_msg=arch)
