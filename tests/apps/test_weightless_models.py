"""Models without trained weights are refused by every app that runs one (issue 12, item 1).

``upscale``, ``repair``, ``evaluate`` and ``export`` give one line naming the entry, saying it has
no trained weights and what to do (``emzoo train ...``, or the entry's ``convert_command``), and
write nothing, unless ``--allow-random-weights`` is given. The refusal comes before the model is
built, so a prelude that makes building fail proves nothing was built.
"""

import os

import numpy as np
import pytest

from app_runner import assert_one_line_error, run_emzoo
from emzoo.data.volumes import open_volume, write_volume
from emzoo_test_helpers import save_tiny_film

# Building or loading any model fails loudly (a traceback), so a refusal must come first.
NO_BUILD = """
    import emzoo.zoo
    def _no_build(*args, **kwargs):
        raise AssertionError("a model was built")
    emzoo.zoo.build_model = _no_build
"""


@pytest.fixture
def stack(tmp_path):
    path = tmp_path / "stack.tif"
    rng = np.random.default_rng(0)
    write_volume(str(path), rng.integers(0, 255, (5, 16, 16)).astype(np.uint8),
                 voxel_size=(40, 8, 8))
    return path


def command(app, stack, model, out):
    if app == "upscale":
        return ["upscale", stack, "-o", out, "--model", model, "--quiet"]
    if app == "repair":
        return ["repair", stack, "-o", out, "--slices", "2", "--model", model, "--quiet"]
    if app == "evaluate":
        return ["evaluate", model, "--data", stack, "--json", out, "--baselines", "linear"]
    return ["export", model, "-o", out]


@pytest.mark.parametrize("app", ["upscale", "repair", "evaluate", "export"])
def test_entry_without_weights_is_refused(tmp_path, stack, app):
    before = sorted(os.listdir(tmp_path))
    done = run_emzoo(command(app, stack, "tsain", tmp_path / "out"), cwd=tmp_path,
                     prelude=NO_BUILD, EMZOO_HOME=str(tmp_path / "home"))
    assert_one_line_error(done, "`tsain` has no trained weights", tmp_path, before)
    assert "emzoo train tsain" in done.stderr and "--allow-random-weights" in done.stderr


@pytest.mark.parametrize("app", ["upscale", "evaluate"])
def test_unconverted_film_entry_names_its_convert_command(tmp_path, stack, app):
    before = sorted(os.listdir(tmp_path))
    done = run_emzoo(command(app, stack, "film-vimeo", tmp_path / "out"), cwd=tmp_path,
                     prelude=NO_BUILD, EMZOO_HOME=str(tmp_path / "home"), EMZOO_OFFLINE="1")
    assert_one_line_error(done, "`film-vimeo` has no trained weights", tmp_path, before)
    assert "emzoo convert film /path/to/film_net/Style/saved_model --name film-vimeo" in done.stderr


@pytest.fixture
def weightless_folder(tmp_path):
    """A saved tiny FILM whose weights file is gone."""
    folder = save_tiny_film(tmp_path / "models")
    os.remove(os.path.join(folder, "model.weights.h5"))
    return folder


@pytest.mark.slow
def test_saved_folder_without_weights_is_refused_then_allowed(tmp_path, stack, weightless_folder):
    before = sorted(os.listdir(tmp_path))
    out = tmp_path / "out.tif"
    done = run_emzoo(command("upscale", stack, weightless_folder, out), cwd=tmp_path,
                     prelude=NO_BUILD)
    assert_one_line_error(done, "has no trained weights", tmp_path, before)
    assert weightless_folder in done.stderr

    done = run_emzoo(command("upscale", stack, weightless_folder, out)
                     + ["--allow-random-weights"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with open_volume(str(out)) as result:
        assert result.shape == (9, 16, 16)
