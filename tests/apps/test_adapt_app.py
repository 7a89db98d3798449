"""``emzoo adapt`` and ``emzoo upscale --adapt`` / ``--model flow`` from the command line."""

import json
import signal
import textwrap

import numpy as np
import pytest
import tifffile

from app_runner import assert_one_line_error, error_lines, run_emzoo
from emzoo_test_helpers import smooth_volume

pytestmark = pytest.mark.tf_only


def _stack(path, depth=12, size=64):
    tifffile.imwrite(path, smooth_volume(depth, size))
    return path


@pytest.mark.slow
def test_adapt_writes_a_model_that_upscale_uses(tmp_path, tiny_model):
    model = tiny_model
    stack = _stack(tmp_path / "stack.tif")
    done = run_emzoo(["adapt", model, "--data", stack, "-o", tmp_path / "adapted", "--steps", "2",
                      "--factor", "4", "--voxel-size", "40,10,10", "--quiet"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and "held-out error" in done.stdout
    entry = json.loads((tmp_path / "adapted" / "config.json").read_text())
    record = entry["metadata"]["adaptation"]
    assert record["steps_run"] == 2 and record["lateral_gaps"] == [2, 1]
    assert record["resumed"] is False and record["budget"] == {"minutes": None, "steps": 2}
    assert record["base_model"] == "tiny-film" and len(record["input_sha256"]) == 64
    assert set(record["self_validation"]) == {"error", "before", "after", "axial_before",
                                              "axial_after"}
    assert record["self_validation"]["error"] == "mse" and record["loss"] == "l2"
    done = run_emzoo(["upscale", stack, "-o", tmp_path / "out.tif", "--model", tmp_path / "adapted",
                      "--factor", "4", "--quiet"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert tifffile.imread(tmp_path / "out.tif").shape == (45, 64, 64)


@pytest.mark.slow   # two app runs; the rule itself: tests/adaptation/test_fine_tune.py
def test_adapt_of_an_input_it_does_not_adapt_says_why_in_one_line(tmp_path, tiny_model):
    model = tiny_model
    stack = _stack(tmp_path / "stack.tif", depth=6, size=8)   # (4 planes would read as RGBA)
    command = ["adapt", model, "--data", stack, "-o", tmp_path / "adapted", "--steps", "2",
               "--factor", "8", "--voxel-size", "80,10,10", "--quiet"]
    for said in ("Wrote", "already complete"):
        done = run_emzoo(command + (["--resume"] if said != "Wrote" else []), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert said in done.stdout and done.stdout.count("\n") == 1
        assert "0 steps" in done.stdout
        assert "not adapted: the input's z spacing is 8x" in done.stdout
        assert "held-out error" not in done.stdout


@pytest.mark.slow   # an app run with adaptation; the library path: tests/adaptation
def test_upscale_adapt_then_upscale_in_one_run(tmp_path, tiny_model):
    model = tiny_model
    stack = _stack(tmp_path / "stack.tif")
    command = ["upscale", stack, "-o", tmp_path / "out.tif", "--model", model, "--factor", "4",
               "--adapt", "0.02", "--voxel-size", "40,10,10", "--quiet"]
    done = run_emzoo(command, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "adapted" in done.stdout and done.stdout.count("\n") == 1
    assert f"adapted model in {tmp_path / 'out.tif.adapted'}" in done.stdout
    assert tifffile.imread(tmp_path / "out.tif").shape == (45, 64, 64)
    record = json.loads((tmp_path / "out.tif.adapted" / "config.json").read_text())
    assert record["metadata"]["adaptation"]["budget"] == {"minutes": 0.02, "steps": None}
    # Adapts again, from the base; the file gives no voxel size: x4 output taken as isotropic.
    command.remove("--voxel-size"), command.remove("40,10,10")
    again = run_emzoo(command + ["--overwrite"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "adapted" in again.stdout and "(reused)" not in again.stdout
    assert "resumed" not in again.stdout
    assert "z spacing is taken as 4x its x spacing" in again.stdout
    record = json.loads((tmp_path / "out.tif.adapted" / "config.json").read_text())
    assert record["metadata"]["adaptation"]["z_spacing_over_x"] == 4


@pytest.mark.slow   # three app runs; in-process: tests/adaptation (beside-output reuse, resume)
def test_upscale_adapt_killed_while_adapting_continues_the_adaptation_when_run_again(tmp_path,
                                                                                     tiny_model):
    model = tiny_model
    stack = _stack(tmp_path / "stack.tif")
    out = tmp_path / "out.tif"
    command = ["upscale", stack, "-o", out, "--model", model, "--factor", "4", "--adapt", "0.3",
               "--voxel-size", "40,10,10", "--quiet"]
    stopped = run_emzoo(command, cwd=tmp_path, prelude=_signal_at_step(3, signal.SIGTERM))
    assert stopped.returncode == 143, stopped.stderr
    lines = error_lines(stopped)
    assert len(lines) == 1 and "checkpoint at step 3" in lines[0], lines
    assert "out.tif.adapted" in lines[0] and "Traceback" not in stopped.stderr
    assert not out.exists()
    done = run_emzoo(command, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "(resumed at step 3)" in done.stdout
    first = tifffile.imread(out)
    assert first.shape == (45, 64, 64)
    out.unlink()   # as if the upscaling had crashed: the finished adaptation is reused
    again = run_emzoo(command, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "(reused)" in again.stdout
    np.testing.assert_array_equal(tifffile.imread(out), first)


@pytest.mark.slow   # an app run; in-process: tests/adaptation/test_fine_tune.py
def test_upscale_adapt_says_when_a_step_diverged(tmp_path, tiny_model):
    model = tiny_model
    stack = _stack(tmp_path / "stack.tif")
    prelude = textwrap.dedent("""
        import keras
        _original = keras.Model.train_on_batch
        _calls = [0]
        def _train_on_batch(self, *a, **k):   # the loss of the 3rd step is not finite
            _calls[0] += 1
            loss = _original(self, *a, **k)
            return float("nan") if _calls[0] == 3 else loss
        keras.Model.train_on_batch = _train_on_batch
        """)
    done = run_emzoo(["upscale", stack, "-o", tmp_path / "out.tif", "--model", model, "--factor",
                      "4", "--adapt", "0.2", "--voxel-size", "40,10,10", "--quiet"], cwd=tmp_path,
                     prelude=prelude)
    assert done.returncode == 0, done.stderr
    assert "adapted 3 steps" in done.stdout and "training diverged at step 3" in done.stdout


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


def _signal_at_step(step, signum):
    """A prelude that sends ``signum`` to the app's process at the end of optimizer step ``step``
    (keras is patched when the adaptation starts, so TensorFlow is imported as the app does)."""
    return textwrap.dedent(f"""
        import emzoo.adaptation as _adaptation
        import emzoo.adaptation.fine_tune as _fine_tune
        _adapt = _adaptation.adapt
        def _adapt_then_signal(*args, **kwargs):
            import os, keras
            original = keras.Model.train_on_batch
            calls = [0]
            def train_on_batch(self, *a, **k):
                result = original(self, *a, **k)
                calls[0] += 1
                if calls[0] == {step}:
                    os.kill(os.getpid(), {int(signum)})
                return result
            keras.Model.train_on_batch = train_on_batch
            return _adapt(*args, **kwargs)
        _adaptation.adapt = _fine_tune.adapt = _adapt_then_signal   # emzoo adapt / upscale --adapt
        """)


def _weights(folder):
    import emzoo

    return emzoo.load(str(folder), compile=False).get_weights()


ADAPT = ["--steps", "8", "--factor", "4", "--voxel-size", "40,10,10", "--checkpoint-every", "2",
         "--quiet"]


@pytest.mark.slow   # four app runs; in-process: tests/adaptation/test_run_folder.py
def test_adapt_killed_and_resumed_gives_the_uninterrupted_weights(tmp_path, tiny_model):
    model = tiny_model
    stack = _stack(tmp_path / "stack.tif")
    run_dir = tmp_path / "adapted"
    command = ["adapt", model, "--data", stack, "-o", run_dir, *ADAPT]
    killed = run_emzoo(command, cwd=tmp_path, prelude=_signal_at_step(5, signal.SIGKILL))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == ["adaptation-checkpoint.h5",
                                                          "adaptation-run.json"]
    resumed = run_emzoo(command + ["--resume"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "8 steps" in resumed.stdout and "resumed at step 4" in resumed.stdout
    whole = run_emzoo(["adapt", model, "--data", stack, "-o", tmp_path / "whole", *ADAPT],
                      cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    for a, b in zip(_weights(run_dir), _weights(tmp_path / "whole")):
        np.testing.assert_array_equal(a, b)
    again = run_emzoo(command + ["--resume"], cwd=tmp_path)
    assert again.returncode == 0 and "already complete" in again.stdout, again.stderr


@pytest.mark.slow   # five app runs; in-process: tests/adaptation/test_run_folder.py
def test_sigterm_checkpoints_and_resume_refuses_another_run(tmp_path, tiny_model):
    model = tiny_model
    stack = _stack(tmp_path / "stack.tif")
    run_dir = tmp_path / "adapted"
    command = ["adapt", model, "--data", stack, "-o", run_dir, *ADAPT]
    stopped = run_emzoo(command, cwd=tmp_path, prelude=_signal_at_step(3, signal.SIGTERM))
    assert stopped.returncode == 143, stopped.stderr
    lines = error_lines(stopped)
    assert len(lines) == 1 and "terminated (SIGTERM); checkpoint at step 3" in lines[0], lines
    assert "--resume" in lines[0] and "Traceback" not in stopped.stderr
    before = sorted(p.name for p in tmp_path.iterdir())
    files = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    # Each refusal of another run is pinned in-process (tests/adaptation/test_run_folder.py);
    # here one of them, as the app prints it, beside the app-level ones.
    for extra, match in (([], "interrupted adaptation (last checkpoint at step 3)"),
                         (["--resume", "--steps", "9"], "another budget"),
                         (["--resume", "--overwrite"], "exclude each other")):
        done = run_emzoo(command + extra, cwd=tmp_path)
        assert_one_line_error(done, match, tmp_path, before)
        assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == files
    done = run_emzoo(command + ["--resume"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "resumed at step 3" in done.stdout and done.stdout.count("\n") == 1


@pytest.mark.slow
def test_upscale_adapt_opens_no_data_file_but_its_input(tmp_path, tiny_model):
    """`emzoo upscale kept.tif --adapt` beside the dropped slices and the full stack: only
    kept.tif is opened in that folder (every Python-level open is audited)."""
    model = tiny_model
    data = tmp_path / "data"
    data.mkdir()
    full = tifffile.imread(_stack(data / "full.tif", depth=17))
    tifffile.imwrite(data / "kept.tif", full[::4])
    tifffile.imwrite(data / "dropped.tif", np.delete(full, np.arange(0, 17, 4), axis=0))
    log = tmp_path / "opened.json"
    audit = textwrap.dedent(f"""
        import atexit, json, os, sys
        _data, _seen = os.path.realpath({str(data)!r}), set()
        def _audit(event, args):
            if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
                path = os.path.realpath(os.fsdecode(args[0]))
                if os.path.dirname(path) == _data:
                    _seen.add(os.path.basename(path))
        sys.addaudithook(_audit)
        atexit.register(lambda: open({str(log)!r}, "w").write(json.dumps(sorted(_seen))))
        """)
    done = run_emzoo(["upscale", data / "kept.tif", "-o", tmp_path / "out.tif", "--model", model,
                      "--factor", "4", "--adapt", "0.02", "--voxel-size", "40,10,10", "--quiet"],
                     cwd=tmp_path, prelude=audit)
    assert done.returncode == 0, done.stderr
    assert "adapted" in done.stdout
    assert json.loads(log.read_text()) == ["kept.tif"]
    assert tifffile.imread(tmp_path / "out.tif").shape == (17, 64, 64)
