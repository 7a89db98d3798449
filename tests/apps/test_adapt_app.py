"""``emzoo adapt`` and ``emzoo upscale --adapt`` / ``--model flow`` from the command line."""

import json

import numpy as np
import pytest
import tifffile

from app_runner import assert_one_line_error, run_emzoo
from emzoo.testing import save_tiny_film

pytestmark = pytest.mark.tf_only


def _stack(path, depth=12, size=64):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    volume = gaussian_filter(rng.random((depth, size, size)), sigma=(1, 2, 2))
    volume = (volume - volume.min()) / (volume.max() - volume.min())
    tifffile.imwrite(path, np.round(volume * 255).astype(np.uint8))
    return path


def test_adapt_writes_a_model_that_upscale_uses(tmp_path):
    model = save_tiny_film(tmp_path)
    stack = _stack(tmp_path / "stack.tif")
    done = run_emzoo(["adapt", model, "--data", stack, "-o", tmp_path / "adapted", "--steps", "2",
                      "--factor", "4", "--voxel-size", "40,10,10", "--quiet"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and "held-out error" in done.stdout
    record = json.loads((tmp_path / "adapted" / "config.json").read_text())["metadata"]["adaptation"]
    assert record["steps_run"] == 2 and record["lateral_gaps"] == [2, 1]
    done = run_emzoo(["upscale", stack, "-o", tmp_path / "out.tif", "--model", tmp_path / "adapted",
                      "--factor", "4", "--quiet"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert tifffile.imread(tmp_path / "out.tif").shape == (45, 64, 64)


def test_upscale_adapt_then_upscale_in_one_run(tmp_path):
    model = save_tiny_film(tmp_path)
    stack = _stack(tmp_path / "stack.tif")
    done = run_emzoo(["upscale", stack, "-o", tmp_path / "out.tif", "--model", model, "--factor",
                      "2", "--adapt", "0.02", "--voxel-size", "20,10,10", "--quiet"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "adapted" in done.stdout and done.stdout.count("\n") == 1
    assert tifffile.imread(tmp_path / "out.tif").shape == (23, 64, 64)


def test_model_flow_needs_no_weights(tmp_path):
    pytest.importorskip("cv2")
    stack = _stack(tmp_path / "stack.tif", depth=5)
    done = run_emzoo(["upscale", stack, "-o", tmp_path / "flow.tif", "--model", "flow",
                      "--factor", "2", "--quiet"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = tifffile.imread(tmp_path / "flow.tif")
    assert out.shape == (9, 64, 64)
    np.testing.assert_array_equal(out[::2], tifffile.imread(stack))


@pytest.mark.parametrize("args, match", [
    (["--adapt", "0"], "--adapt"),
    (["--adapt", "1", "--model", "flow"], "--adapt"),
])
def test_bad_adapt_flags_are_one_line(tmp_path, args, match):
    stack = _stack(tmp_path / "stack.tif", depth=5)
    before = sorted(p.name for p in tmp_path.iterdir())
    done = run_emzoo(["upscale", stack, "-o", tmp_path / "out.tif", *args], cwd=tmp_path)
    assert_one_line_error(done, match, tmp_path, before)


def test_adapt_without_a_budget_is_one_line(tmp_path):
    stack = _stack(tmp_path / "stack.tif", depth=5)
    before = sorted(p.name for p in tmp_path.iterdir())
    done = run_emzoo(["adapt", "default", "--data", stack, "-o", tmp_path / "a"], cwd=tmp_path)
    assert_one_line_error(done, "budget", tmp_path, before)
