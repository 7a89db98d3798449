"""FILM-compatible SavedModel export: reload in a fresh process, call like the FILM tools do."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from emzoo import testing
from emzoo.errors import EmzooError
from emzoo.export import export_saved_model
from emzoo.models.film import FILM

pytestmark = pytest.mark.tf_only

SMALL = dict(pyramid_levels=3, fusion_pyramid_levels=3, specialized_levels=1, sub_levels=2,
             filters=4, flow_convs=[1, 1], flow_filters=[4, 4])

# What FILM's eval/interpolator.py does with a SavedModel, run in a process that never saw emzoo.
RELOAD = textwrap.dedent("""
    import sys, numpy as np, tensorflow as tf
    assert "emzoo" not in sys.modules
    path, inputs_file, out_file = sys.argv[1:]
    loaded = tf.compat.v2.saved_model.load(path)
    data = np.load(inputs_file)
    results = {}
    for tag in ("a", "b"):
        x0, x1, dt = data[tag + "_x0"], data[tag + "_x1"], data[tag + "_dt"]
        out = loaded({"x0": x0, "x1": x1, "time": dt[..., np.newaxis]}, training=False)
        results[tag + "_image"] = out["image"].numpy()
        results[tag + "_flow1"] = out["forward_flow_pyramid"][1].numpy()
    serve = loaded.signatures["serving_default"]
    named = serve(x0=tf.constant(data["a_x0"]), x1=tf.constant(data["a_x1"]),
                  time=tf.constant(data["a_dt"][:, None]))
    results["serving_image"] = named["image"].numpy()
    results["serving_keys"] = np.array(sorted(named))
    results["signature_keys"] = np.array(sorted(loaded.signatures))
    np.savez(out_file, **results)
""")


# FILM's recursive client (eval/interpolator.py with align=None, eval/util.py's recursion), as the
# Z-upscaling CLI runs it on grey EM slices read as RGB: each midpoint is fed back in as an input.
FILM_CLIENT = textwrap.dedent("""
    import sys, numpy as np, tensorflow as tf
    assert "emzoo" not in sys.modules
    path, frames_file, out_file = sys.argv[1:]


    class Interpolator:
        def __init__(self, model_path, use_signature):
            self._model = tf.compat.v2.saved_model.load(model_path)
            self._use_signature = use_signature

        def __call__(self, x0, x1, dt):
            if self._use_signature:
                serve = self._model.signatures["serving_default"]
                return serve(x0=tf.constant(x0), x1=tf.constant(x1),
                             time=tf.constant(dt[..., np.newaxis]))["image"].numpy()
            inputs = {"x0": x0, "x1": x1, "time": dt[..., np.newaxis]}
            return self._model(inputs, training=False)["image"].numpy()


    def recursive_generator(frame1, frame2, num_recursions, interpolator):
        if num_recursions == 0:
            yield frame1
        else:
            time = np.full(shape=(1,), fill_value=0.5, dtype=np.float32)
            mid = interpolator(frame1[np.newaxis, ...], frame2[np.newaxis, ...], time)[0]
            yield from recursive_generator(frame1, mid, num_recursions - 1, interpolator)
            yield from recursive_generator(mid, frame2, num_recursions - 1, interpolator)


    def interpolate_recursively(frames, num_recursions, interpolator):
        for i in range(1, len(frames)):
            yield from recursive_generator(frames[i - 1], frames[i], num_recursions, interpolator)
        yield frames[-1]


    frames = list(np.load(frames_file))  # (H, W, 3) float32 in [0, 1]
    results = {}
    for use_signature in (False, True):
        interpolator = Interpolator(path, use_signature)
        for recursions in (2, 3):
            out = np.stack(list(interpolate_recursively(frames, recursions, interpolator)))
            results[f"x{2 ** recursions}_{'signature' if use_signature else 'call'}"] = out
    np.savez(out_file, **results)
""")


@pytest.mark.slow   # FILM's client at x4 and x8 in a fresh process
def test_default_export_runs_in_film_recursive_client(tmp_path, monkeypatch):
    """The bundled grey default, exported, through FILM's recursive client at x4 and x8 on grey
    slices read as RGB, at a size that is not a multiple of the model's, matches upscale_volume.

    The export is the bare network (FILM's contract: a midpoint of two frames); the engine's guard
    for flat regions and margins (keep_flat_regions, fill_margins; pinned in
    tests/engine/test_flat_regions.py) and its calibration towards linear are engine-side, so the
    reference runs without them: at x8, generated neighbours that agree within a grey level over
    5x5 windows are otherwise averaged.
    """
    import emzoo
    import tifffile
    from emzoo.engine import midpoint, upscale_volume
    from emzoo.samples import sample_path

    model = emzoo.load("default", compile=False)
    path = export_saved_model(model, tmp_path / "default")
    sample = tifffile.imread(sample_path())
    grey = sample[:3, 10:80, 20:110].astype(np.float32) / 255.0  # 70 x 90: not multiples of 16
    np.save(tmp_path / "frames.npy", np.repeat(grey[..., None], 3, axis=-1))
    script = tmp_path / "film_client.py"
    script.write_text(FILM_CLIENT)
    subprocess.run([sys.executable, str(script), str(path), str(tmp_path / "frames.npy"),
                    str(tmp_path / "out.npz")], check=True, timeout=300)
    got = np.load(tmp_path / "out.npz")
    monkeypatch.setattr(midpoint, "keep_flat_regions", lambda x0, x1, image, **_: image)
    monkeypatch.setattr(midpoint, "fill_margins", lambda image, **_: image)
    for factor in (4, 8):
        expected = upscale_volume(grey, model, factor=factor, progress=False,
                                  calibrate=False)["array"]
        assert expected.shape == (2 * factor + 1, 70, 90)
        for how in ("call", "signature"):
            frames = got[f"x{factor}_{how}"]
            assert frames.shape == (2 * factor + 1, 70, 90, 3), how
            np.testing.assert_array_equal(frames[..., 1:], frames[..., :1].repeat(2, axis=-1))
            np.testing.assert_allclose(frames[..., 0], expected, atol=1 / 255, rtol=0,
                                       err_msg=f"x{factor} via {how}")


def _padded_call(model, inputs, multiple):
    """The model on inputs padded like the volume engine (reflected at the bottom/right to
    ``multiple``), cropped back: the reference."""
    h, w = inputs["x0"].shape[1:3]
    pads = ((0, 0), (0, -h % multiple), (0, -w % multiple), (0, 0))
    padded = {k: np.pad(v, pads, mode="reflect") if k != "time" else v for k, v in inputs.items()}
    out = model(padded)
    return {"image": np.asarray(out["image"])[:, :h, :w],
            "flow1": np.asarray(out["forward_flow_pyramid"][1])}


@pytest.mark.slow   # a fresh process imports TensorFlow
def test_export_reloads_in_fresh_process(tmp_path):
    model = FILM(**SMALL, channels=3, aux_outputs=True)
    first, _ = testing.random_inputs(2, 16, 24, 3, seed=1)
    second, _ = testing.random_inputs(1, 14, 22, 3, seed=2)  # not multiples of 4: padded inside
    model(first)
    rng = np.random.default_rng(0)
    for variable in model.weights:
        variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32"))

    path = export_saved_model(model, tmp_path / "exported")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]  # no temporary leftovers
    info = json.loads((path / "assets" / "emzoo_model.json").read_text())
    assert info["architecture"] == "film" and info["config"] == model.get_config()

    arrays = {}
    for tag, inputs in (("a", first), ("b", second)):
        arrays[tag + "_x0"], arrays[tag + "_x1"] = inputs["x0"], inputs["x1"]
        arrays[tag + "_dt"] = inputs["time"][:, 0]
    np.savez(tmp_path / "inputs.npz", **arrays)
    script = tmp_path / "reload.py"
    script.write_text(RELOAD)
    subprocess.run([sys.executable, str(script), str(path), str(tmp_path / "inputs.npz"),
                    str(tmp_path / "out.npz")], check=True, timeout=300)
    got = np.load(tmp_path / "out.npz")

    # SavedModel (graph) and eager float32 differ by up to ~2e-5 (kernel choice, seen in CI); with
    # these random weights outputs reach ~10, so the tolerance is relative as well as absolute.
    expected_a = model(first)
    np.testing.assert_allclose(got["a_image"], np.asarray(expected_a["image"]),
                               rtol=1e-5, atol=5e-5)
    np.testing.assert_allclose(got["a_flow1"], np.asarray(expected_a["forward_flow_pyramid"][1]),
                               rtol=1e-5, atol=5e-5)
    expected_b = _padded_call(model, second, model.size_multiple)
    assert got["b_image"].shape == (1, 14, 22, 3)
    np.testing.assert_allclose(got["b_image"], expected_b["image"], rtol=1e-5, atol=5e-5)
    np.testing.assert_allclose(got["serving_image"], np.asarray(expected_a["image"]),
                               rtol=1e-5, atol=5e-5)
    assert "image" in list(got["serving_keys"]) and "forward_flow_pyramid_0" in list(got["serving_keys"])
    assert list(got["signature_keys"]) == ["serving_default"]


@pytest.mark.slow
def test_grey_model_takes_rgb_like_film_tools(tmp_path):
    import tensorflow as tf

    model = FILM(**SMALL, channels=1)
    inputs, _ = testing.random_inputs(1, 16, 16, 1)
    expected = np.asarray(model(inputs)["image"])
    loaded = tf.saved_model.load(str(export_saved_model(model, tmp_path / "grey")))
    rgb = {k: np.repeat(v, 3, axis=-1) if k != "time" else v for k, v in inputs.items()}
    image = loaded(rgb, training=False)["image"].numpy()
    assert image.shape == (1, 16, 16, 3)
    np.testing.assert_allclose(image, np.repeat(expected, 3, axis=-1), atol=1e-5)
    np.testing.assert_allclose(loaded(inputs, training=False)["image"].numpy(), expected, atol=1e-6)
    native = loaded.signatures["serving_native"](x0=tf.constant(inputs["x0"]),
                                                 x1=tf.constant(inputs["x1"]),
                                                 time=tf.constant(inputs["time"]))
    np.testing.assert_allclose(native["image"].numpy(), expected, atol=1e-6)


def test_existing_folder_is_not_overwritten(tmp_path):
    model = FILM(**SMALL)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("x")
    with pytest.raises(EmzooError, match="already exists"):
        export_saved_model(model, tmp_path / "taken")
    assert (tmp_path / "taken" / "keep.txt").exists()


def test_non_interpolator_is_refused(tmp_path):
    import keras

    with pytest.raises(EmzooError, match="Received"):
        export_saved_model(keras.Sequential([keras.layers.Dense(1)]), tmp_path / "x")
