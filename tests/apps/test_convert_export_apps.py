"""``emzoo convert`` and ``emzoo export`` end to end, through subprocesses (each app has its flags)."""

import os
import pathlib

import numpy as np
import pytest

import emzoo
from emzoo import testing
from emzoo.convert import convert_film_saved_model
from emzoo.models.film.saved_model import write_original_layout
from emzoo.models.film import FILM

from app_runner import run_emzoo  # noqa: E402 (tests/apps is on sys.path)

pytestmark = pytest.mark.tf_only

REPO = pathlib.Path(__file__).resolve().parents[2]
SMALL = dict(pyramid_levels=7, fusion_pyramid_levels=2, specialized_levels=1, sub_levels=1,
             filters=2, flow_convs=[1, 1], flow_filters=[2, 2])


def run_offline(args, home):
    return run_emzoo(args, timeout=300, EMZOO_HOME=str(home), EMZOO_OFFLINE="1")


def last_line(done):
    lines = [line for line in done.stderr.splitlines() if line.startswith("emzoo:")]
    return lines[-1] if lines else done.stderr


@pytest.mark.slow   # three app runs, a SavedModel export
def test_convert_then_load_then_export(tmp_path, monkeypatch):
    source = FILM(**SMALL)
    inputs, _ = testing.random_inputs(1, 64, 64, 3)
    source(inputs)
    rng = np.random.default_rng(0)
    for variable in source.weights:
        variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32"))
    original = write_original_layout(tmp_path / "saved_model", source.original_variables().items())
    home = tmp_path / "home"

    done = run_offline(["convert", "film", original, "--name", "my-film"], home)
    assert done.returncode == 0, done.stderr
    installed = home / "my-film" / "model.weights.h5"
    assert installed.is_file() and str(installed) in done.stdout
    model = emzoo.load(home / "my-film", compile=False)  # config read from the variable shapes
    assert model.get_config() == source.get_config()
    np.testing.assert_array_equal(np.asarray(model(inputs)["image"]),
                                  np.asarray(source(inputs)["image"]))

    monkeypatch.setenv("EMZOO_HOME", str(home))
    with pytest.raises(emzoo.errors.EmzooError, match="--overwrite"):
        convert_film_saved_model(original, "my-film")

    exported = tmp_path / "exported"
    done = run_offline(["export", home / "my-film", "-o", exported], home)
    assert done.returncode == 0, done.stderr
    assert (exported / "saved_model.pb").is_file()
    # TensorFlow's INFO lines while saving (signature input names, fingerprint) stay hidden.
    assert "signature_serialization" not in done.stderr and "fingerprint" not in done.stderr


def test_convert_errors_are_one_line(tmp_path):
    home = tmp_path / "home"
    done = run_offline(["convert", "film", tmp_path / "missing", "--name", "x"], home)
    assert done.returncode == 1
    assert "does not exist" in last_line(done) and "Traceback" not in done.stderr
    assert not home.exists() or not any(home.iterdir())


def test_missing_film_weights_say_what_to_get_and_run(tmp_path, monkeypatch):
    monkeypatch.setenv("EMZOO_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("EMZOO_OFFLINE", "1")
    with pytest.raises(emzoo.errors.WeightsError) as error:
        emzoo.load("film-ft-em", compile=False)
    message = str(error.value)
    assert "Z-upscaling" in message
    assert "emzoo convert film /path/to/saved_model --name film-ft-em" in message


def test_export_keeps_an_existing_folder_before_loading_the_model(tmp_path):
    from app_runner import assert_one_line_error

    target = tmp_path / "exported"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    before = sorted(p.name for p in tmp_path.iterdir())
    prelude = """
        import emzoo.zoo
        def _no_load(*args, **kwargs):
            raise AssertionError("a model was loaded")
        emzoo.zoo.load = _no_load
    """
    done = run_emzoo(["export", "default", "-o", target], cwd=tmp_path, prelude=prelude)
    assert_one_line_error(done, "--overwrite", tmp_path, before)
    assert (target / "keep.txt").read_text() == "precious" and os.listdir(target) == ["keep.txt"]
