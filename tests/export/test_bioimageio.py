"""bioimage.io model packages: written by ``emzoo export --format bioimageio``, passed by
bioimageio.core's own test (offline), and loaded back exactly by ``emzoo.load("NAME.zip")``."""

import pathlib
import sys
import zipfile

import numpy as np
import pytest

import emzoo
from emzoo import testing
from emzoo.errors import EmzooError, UnknownModelError

pytest.importorskip("bioimageio.core")
pytestmark = pytest.mark.tf_only

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "apps"))
from app_runner import assert_one_line_error, run_emzoo  # noqa: E402

METADATA = {"license": "MIT (tiny test model)", "trained_on": ["nothing: random weights"],
            "paper": "F. Reda et al., FILM: Frame Interpolation for Large Motion, ECCV 2022."}


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A TINY_FILM (size multiple 2) saved with metadata, and its package written by the app."""
    from emzoo.models.film import FILM

    folder = tmp_path_factory.mktemp("bioimageio")
    model = FILM(**testing.TINY_FILM)
    model.build_for_weights()
    saved = emzoo.save(model, folder / "tiny-film", metadata=METADATA)
    path = folder / "tiny-film.zip"
    done = run_emzoo(["export", saved, "--format", "bioimageio", "-o", path], timeout=300,
                     EMZOO_HOME=str(folder / "home"), EMZOO_OFFLINE="1")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "bioimageio test" in done.stdout
    return saved, path


@pytest.mark.slow   # bioimageio.core's own test of a package (CI step 3b also runs it)
def test_package_passes_bioimageio_core_test(package, tmp_path, monkeypatch):
    from bioimageio.core import test_model

    monkeypatch.chdir(tmp_path)  # bioimageio.core unpacks the SavedModel into the current folder
    summary = test_model(package[1])
    failed = [d for d in summary.details if d.status == "failed"]
    assert summary.status == "passed", [(d.name, d.errors) for d in failed]
    names = [d.name for d in summary.details]
    assert any("Reproduce test outputs" in name for name in names), names


def test_package_declares_inputs_outputs_and_metadata(package):
    from bioimageio.spec import load_model_description

    descr = load_model_description(package[1], perform_io_checks=False)
    (slices,), (image,) = descr.inputs, descr.outputs
    assert [str(a.id) for a in slices.axes] == ["batch", "y", "x", "channel"]
    assert slices.axes[3].channel_names == ["x0", "x1"]
    assert slices.axes[1].size.min == slices.axes[1].size.step == 2  # the size multiple
    assert [str(a.id) for a in image.axes] == ["batch", "y", "x", "channel"]
    assert tuple(slices.data.range) == tuple(image.data.range) == (0.0, 1.0)
    assert slices.data.type == image.data.type == "float32"
    assert descr.weights.tensorflow_saved_model_bundle is not None
    assert str(descr.license) == "MIT"
    assert any("arxiv.org/abs/2202.04901" in str(c.url) for c in descr.cite)
    assert all(c.doi or c.url for c in descr.cite)
    assert "random weights" in descr.training_data.description
    with zipfile.ZipFile(package[1]) as archive:
        names = set(archive.namelist())
        readme = archive.read("README.md").decode()
        test_input = np.load(archive.open("test_input.npy"))
    assert {"config.json", "model.weights.h5", "cover.png", "test_output.npy"} <= names
    assert "multiples of **2**" in readme and "Time is ignored" in readme
    assert test_input.shape == (1, 192, 192, 2) and test_input.dtype == np.float32
    assert 0.0 <= test_input.min() and test_input.max() <= 1.0


def test_load_zip_gives_the_same_model(package, emzoo_home):
    original = emzoo.load(package[0], compile=False)
    loaded = emzoo.load(str(package[1]), compile=False)
    inputs, _ = testing.random_inputs(2, 16, 12, 1)
    np.testing.assert_array_equal(np.asarray(original(inputs)["image"]),
                                  np.asarray(loaded(inputs)["image"]))
    assert loaded.zoo_entry["metadata"]["license"] == METADATA["license"]
    assert emzoo.describe_model(package[1])["_dir"].startswith(str(emzoo_home))


def test_a_zip_without_an_emzoo_model_is_refused(tmp_path, emzoo_home):
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("rdf.yaml", "type: model\n")
    with pytest.raises(UnknownModelError, match="holds no emzoo model"):
        emzoo.load(other)
    (tmp_path / "bad.zip").write_text("not a zip")
    with pytest.raises(UnknownModelError, match="not a zip file"):
        emzoo.load(tmp_path / "bad.zip")


def test_licence_and_citations_from_entry_metadata():
    from emzoo.export.bioimageio import citations, spdx_license

    assert spdx_license(emzoo.describe_model("default")["metadata"]["license"]) == "Apache-2.0"
    assert spdx_license(emzoo.describe_model("film-ft-em")["metadata"]["license"]) == "Apache-2.0"
    assert spdx_license("research use only") is None
    cites = citations(emzoo.describe_model("ssan"))
    assert cites[0]["doi"] == "10.1186/s13040-021-00236-z"
    cites = citations(emzoo.describe_model("film-ft-em"))
    assert cites[0]["url"] == "https://github.com/Fisseha21/Z-upscaling"
    assert any(c.get("url") == "https://arxiv.org/abs/2202.04901" for c in cites)


def test_export_refuses_no_licence_and_a_non_zip_output(package, tmp_path):
    from emzoo.export.bioimageio import export_bioimageio

    model = emzoo.load(package[0], compile=False)
    model.zoo_entry["metadata"]["license"] = "research use only"
    with pytest.raises(EmzooError, match="names no licence"):
        export_bioimageio(model, tmp_path / "x.zip")
    before = sorted(p.name for p in tmp_path.iterdir())
    done = run_emzoo(["export", package[0], "--format", "bioimageio", "-o", tmp_path / "x"],
                     timeout=120)
    assert_one_line_error(done, "is a .zip file", tmp_path, before)
