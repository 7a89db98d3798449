"""Tests of emzoo.engine.precision (float32 / bf16 jobs, the support check) and of
emzoo.engine.policy's thread setting and XLA choice under bf16."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from emzoo.engine import MidpointEngine, repair_volume, upscale_volume
from emzoo.engine import precision as precision_lib
from emzoo.engine.policy import resolve_jit_compile
from emzoo.errors import EmzooError
from emzoo.models.film import FILM
from emzoo.testing import TINY_FILM
from emzoo_test_helpers import MeanModel, random_volume


@pytest.fixture
def bf16_here(monkeypatch):
    """bf16 counted as supported (the numerics run on any CPU; only the speed needs AMX)."""
    monkeypatch.setattr(precision_lib, "bf16_support", lambda: (True, "test"))


@pytest.fixture
def no_bf16(monkeypatch):
    monkeypatch.setattr(precision_lib, "bf16_support",
                        lambda: (False, "this CPU has none of the bf16 instructions (test)"))


def tiny_film(seed=0):
    keras.utils.set_random_seed(seed)
    return FILM(**TINY_FILM).build_for_weights()


class PlainCallable:
    """A model that is not a Keras model (like the optical-flow baseline): the mean of x0, x1."""

    size_multiple = 1
    channels = 1

    def __call__(self, inputs, training=False):
        return {"image": 0.5 * (np.asarray(inputs["x0"]) + np.asarray(inputs["x1"]))}


# --------------------------------------------------------------------------- the argument
@pytest.mark.parametrize("value, expected", [("float32", "float32"), ("BF16", "bf16"),
                                             ("bfloat16", "bf16"), (" auto ", "auto")])
def test_precision_values(value, expected):
    assert precision_lib.check_precision(value) == expected


@pytest.mark.parametrize("value", ["fp16", "float16", None, 16])
def test_bad_precision_is_one_clear_line(value):
    with pytest.raises(EmzooError, match=r"`precision`.*float32, bf16, auto.*Received: precision="):
        precision_lib.check_precision(value)


# ------------------------------------------------------------------------- support check
@pytest.mark.parametrize("flags, supported", [
    ("fpu sse avx2 avx512f avx512_bf16", True),
    ("fpu sse avx2 amx_tile amx_bf16", True),
    ("fpu sse avx2 avx512f avx_vnni", False),
])
def test_cpu_support_reads_the_flags(tmp_path, flags, supported):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("".join(f"processor\t: {cpu}\nflags\t\t: {flags}\n\n" for cpu in (0, 1)))
    found, reason = precision_lib.cpu_bf16_support(str(cpuinfo))
    assert found is supported
    assert ("avx512_bf16" in reason or "amx_bf16" in reason)


def test_arm_bf16_feature_counts(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n")
    assert precision_lib.cpu_bf16_support(str(cpuinfo))[0] is True


def test_unreadable_cpuinfo_is_unknown_and_refused_unless_forced(tmp_path, monkeypatch):
    assert precision_lib.cpu_bf16_support(str(tmp_path / "missing"))[0] is None
    monkeypatch.setattr(precision_lib, "_gpu_capabilities", lambda: [])
    monkeypatch.setattr(precision_lib, "cpu_bf16_support",
                        lambda: (None, "cannot tell whether this CPU computes bf16 natively"))
    monkeypatch.delenv(precision_lib.FORCE_VARIABLE, raising=False)
    supported, reason = precision_lib.bf16_support()
    assert supported is False and "cannot tell" in reason
    monkeypatch.setenv(precision_lib.FORCE_VARIABLE, "1")
    supported, reason = precision_lib.bf16_support()
    assert supported is True and precision_lib.FORCE_VARIABLE in reason


@pytest.mark.parametrize("capability, supported", [((7, 5), False), ((8, 0), True),
                                                   ((9, 0), True), (None, False)])
def test_gpu_support_needs_compute_capability_8(monkeypatch, capability, supported):
    monkeypatch.delenv(precision_lib.FORCE_VARIABLE, raising=False)
    monkeypatch.setattr(precision_lib, "_gpu_capabilities", lambda: [("Some GPU", capability)])
    monkeypatch.setattr(precision_lib, "cpu_bf16_support", lambda: (True, "CPU with amx_bf16"))
    found, reason = precision_lib.bf16_support()
    assert found is supported
    if not supported:
        assert "compute capability" in reason and "8.0" in reason


# ------------------------------------------------------------------- bf16 computes in bf16
def test_bf16_is_close_to_float32_and_computed_in_bf16(bf16_here):
    model = tiny_film()
    volume = random_volume((3, 32, 48), seed=1)
    args = dict(factor=4, progress=False, jit_compile=False)
    full = upscale_volume(volume, model, precision="float32", **args)
    half = upscale_volume(volume, model, precision="bf16", **args)
    assert (full["precision"], half["precision"]) == ("float32", "bf16")
    assert half["array"].dtype == np.float32
    np.testing.assert_allclose(half["array"], full["array"], atol=2e-2)
    assert not np.array_equal(half["array"], full["array"])  # it did not run the float32 model

    engine = MidpointEngine(model, 32, 48, precision="bf16")
    fast = engine.model
    assert fast is not model and model.compute_dtype == "float32"  # the user's model untouched
    convs = [layer for layer in fast._flatten_layers() if isinstance(layer, keras.layers.Conv2D)]
    in_bf16 = [conv for conv in convs if conv.compute_dtype == "bfloat16"]
    assert len(in_bf16) == len(convs) - 1  # all but the image's last conv, float32 by design
    assert fast.fusion.convs[-1].compute_dtype == "float32"
    assert all(variable.dtype == "float32" for variable in fast.weights)
    features = fast.extract(np.zeros((1, 32, 48, 1), np.float32))["features"]
    assert all(keras.backend.standardize_dtype(f.dtype) == "bfloat16" for f in features)
    out = fast({"x0": np.zeros((1, 32, 48, 1), np.float32),
                "x1": np.ones((1, 32, 48, 1), np.float32), "time": np.full((1, 1), 0.5)})
    assert keras.backend.standardize_dtype(out["image"].dtype) == "float32"


def test_bf16_copy_follows_the_models_weights(bf16_here):
    model = tiny_film()
    first = precision_lib.with_precision(model, "bf16")
    for a, b in zip(first.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    model.set_weights([2.0 * w for w in model.get_weights()])  # e.g. fine-tuned in between
    again = precision_lib.with_precision(model, "bf16")
    assert again is first  # rebuilt once, its compiled calls reused by later jobs
    for a, b in zip(again.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_float32_runs_the_model_itself_and_a_bf16_model_is_run_as_float32(bf16_here):
    model = tiny_film()
    assert precision_lib.with_precision(model, "float32") is model
    fast = precision_lib.with_precision(model, "bf16")
    assert precision_lib.with_precision(fast, "bf16") is fast
    back = precision_lib.with_precision(fast, "float32")
    assert back.compute_dtype == "float32" and back is not fast


@pytest.mark.parametrize("architecture, config", [
    ("film", TINY_FILM),
    pytest.param("tsain", dict(filters=8, extraction_blocks=1, reconstruction_blocks=1,
                               deformable_groups=2, spatial_adaptive_blocks=1,
                               rsab_deformable_groups=1, refinement_blocks=1, pyramid_levels=2,
                               channels=1, remat=False), marks=pytest.mark.slow),  # 11 s
    ("ssan", dict(rdn_blocks=2, rdn_layers=2, rdn_growth=4, features=8, outer_partition=2,
                  inner_partition=2, attention_reduction=4, hybrid_width=8, hybrid_blocks=1)),
    ("dan", dict(rdn_blocks=2, rdn_layers=2, rdn_growth=4, features=8, outer_partition=2,
                 inner_partition=2, attention_reduction=4, blend_width=8)),
])
def test_every_architecture_runs_in_bf16(architecture, config):
    from emzoo import zoo

    keras.utils.set_random_seed(3)
    model = zoo.get_architecture(architecture)(**config).build_for_weights()
    size = max(model.min_size(), 16)
    rng = np.random.default_rng(0)
    inputs = {"x0": rng.random((1, size, size, model.channels), np.float32),
              "x1": rng.random((1, size, size, model.channels), np.float32),
              "time": np.full((1, 1), 0.5, np.float32)}
    full = np.asarray(model(inputs)["image"])
    fast = precision_lib.with_precision(model, "bf16")
    half = fast(inputs)["image"]
    assert keras.backend.standardize_dtype(half.dtype) == "float32"
    half = np.asarray(half)
    assert np.all(np.isfinite(half))
    scale = float(np.abs(full).max()) + 1.0
    assert float(np.abs(half - full).max()) <= 0.05 * scale, architecture


# ------------------------------------------------------------------------------- refusals
def test_bf16_refused_where_unsupported_one_line_nothing_written(tmp_path, no_bf16):
    volume = (random_volume((3, 16, 16), seed=2) * 255).astype(np.uint8)
    output = tmp_path / "out.tif"
    for job in (lambda: upscale_volume(volume, tiny_film(), output=str(output), precision="bf16",
                                       progress=False),
                lambda: repair_volume(volume, [1], tiny_film(), output=str(output),
                                      precision="bf16", progress=False)):
        with pytest.raises(EmzooError) as error:
            job()
        message = str(error.value)
        assert "\n" not in message
        assert "bf16 is not supported here" in message and "none of the bf16" in message
        assert "Received: precision='bf16'" in message
        assert os.listdir(tmp_path) == []


def test_auto_is_float32_where_unsupported(no_bf16):
    result = upscale_volume(random_volume((3, 16, 16)), tiny_film(), precision="auto",
                            progress=False)
    assert result["precision"] == "float32"


def test_auto_is_bf16_where_supported(bf16_here):
    result = upscale_volume(random_volume((3, 16, 16)), tiny_film(), precision="auto",
                            progress=False)
    assert result["precision"] == "bf16"


def test_models_that_are_not_keras_refuse_bf16_and_auto_runs_them_in_float32(bf16_here):
    volume = random_volume((3, 8, 8), seed=4)
    with pytest.raises(EmzooError, match="PlainCallable cannot compute in bf16"):
        upscale_volume(volume, PlainCallable(), precision="bf16", progress=False)
    result = upscale_volume(volume, PlainCallable(), precision="auto", progress=False)
    assert result["precision"] == "float32"
    np.testing.assert_allclose(result["array"][1], (volume[0] + volume[1]) / 2, atol=1e-6)


def test_evaluate_reports_the_precision(bf16_here):
    from emzoo.evaluate import evaluate_volume

    volume = (random_volume((5, 16, 16), seed=5) * 255).astype(np.uint8)
    report = evaluate_volume(volume, 2, model=MeanModel(), baselines=(), precision="bf16")
    assert report["precision"] == "bf16"
    assert evaluate_volume(volume, 2, model=None, baselines=("linear",))["precision"] is None


# ------------------------------------------------------------------- XLA and thread pools
def test_bf16_on_a_cpu_keeps_the_plain_graph(monkeypatch):
    on_tf = keras.backend.backend() == "tensorflow"
    monkeypatch.setattr(precision_lib, "computes_on_gpu", lambda: False)
    assert resolve_jit_compile("auto", reuse_features=True, precision="bf16") is False
    assert resolve_jit_compile("auto", reuse_features=True, precision="float32") == on_tf
    assert resolve_jit_compile(True, reuse_features=True, precision="bf16") is True  # asked for
    monkeypatch.setattr(precision_lib, "computes_on_gpu", lambda: True)
    assert resolve_jit_compile("auto", reuse_features=True, precision="bf16") == on_tf


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's thread pools")
def test_configure_threads_before_first_op_then_refuses_a_change():
    code = textwrap.dedent("""
        import tensorflow as tf
        from emzoo.engine.policy import configure_threads
        from emzoo.errors import EmzooError
        print(configure_threads(intra=1, inter=2))
        print(tf.config.threading.get_intra_op_parallelism_threads(),
              tf.config.threading.get_inter_op_parallelism_threads())
        float(tf.reduce_sum(tf.ones((4, 4))))  # TensorFlow starts: its pools are now fixed
        print(configure_threads(intra=1), configure_threads())
        try:
            configure_threads(intra=2)
        except EmzooError as error:
            print("refused:", error)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "{'intra': 1, 'inter': 2}"
    assert lines[1] == "1 2"
    assert lines[2] == "{'intra': 1, 'inter': 2} {'intra': 1, 'inter': 2}"
    assert lines[3].startswith("refused: TensorFlow already runs with 1 intra-op threads")
    assert lines[3].endswith("Received: intra=2")


def test_configure_threads_checks_its_arguments():
    from emzoo.engine.policy import configure_threads

    with pytest.raises(EmzooError, match="`intra`"):
        configure_threads(intra=-1)
    with pytest.raises(EmzooError, match="`inter`"):
        configure_threads(inter="two")
