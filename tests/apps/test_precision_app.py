"""``--precision`` of ``emzoo upscale``, ``repair`` and ``evaluate``, end to end (subprocesses).

The support check is patched in the subprocess (``PRELUDE``) and in this process alike, so the
tests run on any CPU: the numerics of bf16 do not need AVX512-BF16 / AMX, only its speed does.
"""

import json
import os

import numpy as np
import pytest

from app_runner import assert_one_line_error, run_emzoo
from emzoo.data.volumes import open_volume, write_volume

SUPPORTED = """
    import emzoo.engine.precision as _precision
    _precision.bf16_support = lambda: (True, "test")
"""
UNSUPPORTED = """
    import emzoo.engine.precision as _precision
    _precision.bf16_support = lambda: (False, "this CPU has none of the bf16 instructions (test)")
"""


@pytest.fixture
def stack(tmp_path):
    path = tmp_path / "stack.tif"
    rng = np.random.default_rng(2)
    array = rng.random((4, 32, 48)).astype(np.float32)  # float32: small differences are kept
    write_volume(str(path), array, voxel_size=(40, 8, 8))
    return path, array


def _library(array, model, precision, monkeypatch):
    import emzoo
    import emzoo.engine.precision as precision_lib

    monkeypatch.setattr(precision_lib, "bf16_support", lambda: (True, "test"))
    return emzoo.upscale_volume(array, model, factor=2, precision=precision,
                                progress=False)["array"]


@pytest.mark.slow   # four app runs; the policy itself: tests/engine/test_precision.py
def test_upscale_runs_the_precision_asked_for_and_auto_by_default(tmp_path, tiny_model, stack,
                                                                   monkeypatch):
    path, array = stack
    written = {}
    for name, flags in (("float32", ["--precision", "float32"]), ("bf16", ["--precision", "bf16"]),
                        ("default", [])):
        out = tmp_path / f"{name}.tif"
        done = run_emzoo(["upscale", path, "-o", out, "--model", tiny_model, "--factor", "2",
                          "--quiet", *flags], cwd=tmp_path, prelude=SUPPORTED)
        assert done.returncode == 0, done.stderr
        with open_volume(str(out)) as volume:
            written[name] = volume.read_range(0, volume.shape[0])
    full = _library(array, tiny_model, "float32", monkeypatch)
    half = _library(array, tiny_model, "bf16", monkeypatch)
    assert not np.array_equal(full, half)  # the two precisions are told apart on this stack
    np.testing.assert_array_equal(written["float32"], full)
    np.testing.assert_array_equal(written["bf16"], half)
    np.testing.assert_array_equal(written["default"], half)  # auto: bf16 where supported
    assert float(np.abs(full - half).max()) <= 0.02  # close


@pytest.mark.parametrize("command", [
    ["upscale", "--factor", "2"],
    pytest.param(["repair", "--slices", "1"], marks=pytest.mark.slow),
])
def test_bf16_refused_where_unsupported(tmp_path, tiny_model, stack, command):
    path, _ = stack
    before = sorted(os.listdir(tmp_path))
    done = run_emzoo([command[0], path, "-o", tmp_path / "out.tif", "--model", tiny_model,
                      "--precision", "bf16", *command[1:]], cwd=tmp_path, prelude=UNSUPPORTED)
    assert_one_line_error(done, "bf16 is not supported here", tmp_path, before)
    assert "none of the bf16 instructions" in done.stderr


@pytest.mark.slow
def test_auto_falls_back_to_float32_where_unsupported(tmp_path, tiny_model, stack, monkeypatch):
    path, array = stack
    out = tmp_path / "auto.tif"
    done = run_emzoo(["upscale", path, "-o", out, "--model", tiny_model, "--factor", "2",
                      "--quiet"], cwd=tmp_path, prelude=UNSUPPORTED)
    assert done.returncode == 0, done.stderr
    with open_volume(str(out)) as volume:
        np.testing.assert_array_equal(volume.read_range(0, volume.shape[0]),
                                      _library(array, tiny_model, "float32", monkeypatch))


def test_unknown_precision_is_a_flag_error(tmp_path, stack):
    path, _ = stack
    before = sorted(os.listdir(tmp_path))
    done = run_emzoo(["upscale", path, "-o", tmp_path / "out.tif", "--precision", "fp16"],
                     cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "precision" in done.stderr and "fp16" in done.stderr
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.slow   # two evaluate runs
def test_evaluate_records_the_precision(tmp_path, tiny_model, stack):
    path, _ = stack
    precisions = {}
    for flags in ([], ["--precision", "bf16"]):
        report = tmp_path / f"scores{len(flags)}.json"
        done = run_emzoo(["evaluate", tiny_model, "--data", path, "--factor", "2", "--baselines",
                          "", "--json", report, *flags], cwd=tmp_path, prelude=SUPPORTED)
        assert done.returncode == 0, done.stderr
        precisions[tuple(flags)] = json.loads(report.read_text())["precision"]
    # evaluate scores in float32 unless asked (scores comparable across machines)
    assert precisions == {(): "float32", ("--precision", "bf16"): "bf16"}


def test_help_lists_the_precision_flag():
    for command in ("upscale", "repair", "evaluate"):
        done = run_emzoo([command, "--help"])
        assert "--precision" in done.stdout, command
