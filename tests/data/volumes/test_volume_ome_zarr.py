"""emzoo.data.volumes.ome_zarr: NGFF 0.4 / 0.5 levels, voxel sizes from coordinateTransformations,
metadata the ome-zarr reader accepts, and the upscale engine end to end."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from emzoo.data import volumes as V
from emzoo.errors import VolumeError

zarr = pytest.importorskip("zarr")


def ome_reader_nodes(path):
    """The image nodes the ``ome-zarr`` package's reader finds (skips when it is not installed)."""
    io = pytest.importorskip("ome_zarr.io")
    reader = pytest.importorskip("ome_zarr.reader")
    return [node for node in reader.Reader(io.parse_url(str(path)))() if node.load(reader.Multiscales)]


def write_ngff(path, version, array, scale, unit, axes="tczyx", paths=("s0",)):
    """An OME-Zarr written by hand, as other tools write them (5-D, micrometres, their level names)."""
    root = zarr.open_group(str(path), mode="w", zarr_format=2 if version == "0.4" else 3)
    data = array.reshape((1,) * (len(axes) - 3) + array.shape)
    for index, name in enumerate(paths):
        root.create_array(name, shape=data.shape, dtype=data.dtype)[:] = data if index == 0 else 0
    types = {"t": "time", "c": "channel"}
    multiscale = {
        "axes": [{"name": a, "type": types.get(a, "space"), **({"unit": unit} if a in "zyx" else {})}
                 for a in axes],
        "datasets": [{"path": name, "coordinateTransformations": [
            {"type": "scale", "scale": [1.0] * (len(axes) - 3) + [s * 2 ** i for s in scale]}]}
            for i, name in enumerate(paths)]}
    if version == "0.4":
        root.attrs["multiscales"] = [{"version": "0.4", **multiscale}]
    else:
        root.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_reads_level_0_a_chosen_level_and_converts_units(tmp_path, random_stack, version):
    array = random_stack("uint16", (4, 6, 5))
    path = tmp_path / "lab.ome.zarr"
    write_ngff(path, version, array, (0.05, 0.004, 0.004), "micrometer", paths=("s0", "s1"))
    with V.open_volume(path) as vol:
        assert vol.path.endswith("lab.ome.zarr:/s0") and vol.shape == (4, 6, 5)
        assert vol.voxel_size == (50.0, 4.0, 4.0)
        np.testing.assert_array_equal(vol.read_range(0, 4), array)
    with V.open_volume(f"{path}:/s1") as level:
        assert level.voxel_size == (100.0, 8.0, 8.0)  # the level's own scale
    assert V.ome_zarr.open_address(str(path), level=1).path.endswith(":/s1")
    assert V.ome_zarr.open_address(str(path), level="s1").voxel_size == (100.0, 8.0, 8.0)
    with pytest.raises(VolumeError, match="No such level"):
        V.ome_zarr.open_address(str(path), level=2)


def test_any_zarr_suffix_with_a_multiscale_reads_as_ome_zarr(tmp_path, random_stack):
    array = random_stack("uint8", (3, 4, 5))
    write_ngff(tmp_path / "plain.zarr", "0.4", array, (40, 4, 4), "nanometer", axes="zyx")
    with V.open_volume(tmp_path / "plain.zarr") as vol:
        assert vol.voxel_size == (40.0, 4.0, 4.0)
        np.testing.assert_array_equal(vol.read(2), array[2])


def test_without_units_the_voxel_size_is_unknown(tmp_path, random_stack):
    write_ngff(tmp_path / "nounit.ome.zarr", "0.4", random_stack("uint8", (2, 3, 3)), (1, 1, 1), None)
    assert V.open_volume(tmp_path / "nounit.ome.zarr").voxel_size is None


def test_non_space_axes_longer_than_1_are_refused(tmp_path):
    root = zarr.open_group(str(tmp_path / "two_channels.ome.zarr"), mode="w", zarr_format=2)
    root.create_array("0", shape=(2, 3, 4, 5), dtype="uint8")
    root.attrs["multiscales"] = [{"version": "0.4", "axes": [
        {"name": "c", "type": "channel"}, {"name": "z", "type": "space"}, {"name": "y", "type": "space"},
        {"name": "x", "type": "space"}], "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [1, 1, 1, 1]}]}]}]
    with pytest.raises(VolumeError, match="not a grey-level 3-D volume") as error:
        V.open_volume(tmp_path / "two_channels.ome.zarr")
    assert "\n" not in str(error.value) and "shape=(2, 3, 4, 5)" in str(error.value)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_round_trip_is_a_valid_multiscale_for_the_ome_zarr_reader(tmp_path, random_stack, version, dtype):
    array = random_stack(dtype, (5, 12, 10))
    path = tmp_path / "out.ome.zarr"
    with V.create_volume(path, array.shape, dtype, (12.5, 4, 4), ome_version=version, levels=3) as out:
        for z in range(5):
            out.write(z, array[z])
    with V.open_volume(path) as vol:
        assert vol.dtype == np.dtype(dtype) and vol.voxel_size == (12.5, 4.0, 4.0)
        np.testing.assert_array_equal(vol.read_range(0, 5), array)
    assert V.open_volume(f"{path}:/2").shape == (5, 3, 3)
    nodes = ome_reader_nodes(path)
    assert len(nodes) == 1
    metadata = nodes[0].metadata
    assert [a["name"] for a in metadata["axes"]] == ["z", "y", "x"]
    assert {a["unit"] for a in metadata["axes"]} == {"nanometer"}
    assert metadata["coordinateTransformations"][0] == [{"type": "scale", "scale": [12.5, 4.0, 4.0]}]
    assert metadata["coordinateTransformations"][1][0]["scale"] == [12.5, 8.0, 8.0]
    assert [tuple(level.shape) for level in nodes[0].data] == [(5, 12, 10), (5, 6, 5), (5, 3, 3)]
    np.testing.assert_array_equal(np.asarray(nodes[0].data[0]), array)
    level1 = np.asarray(nodes[0].data[1]).astype(np.float64)
    expected = array[:, :2, :2].astype(np.float64).mean(axis=(1, 2))
    np.testing.assert_allclose(level1[:, 0, 0], expected, atol=0.5 if dtype == "uint8" else 1e-6)
    root = zarr.open_group(str(path), mode="r")
    assert root.metadata.zarr_format == (2 if version == "0.4" else 3)
    if version == "0.4":  # NGFF 0.4 requires "/" chunk keys
        assert json.loads((path / "0" / ".zarray").read_text())["dimension_separator"] == "/"


def test_one_level_and_no_voxel_size(tmp_path, random_stack):
    array = random_stack("uint8", (3, 4, 5))
    V.write_volume(tmp_path / "bare.ome.zarr", array)
    vol = V.open_volume(tmp_path / "bare.ome.zarr")
    assert vol.voxel_size is None and vol.path.endswith(":/0")
    assert len(ome_reader_nodes(tmp_path / "bare.ome.zarr")[0].data) == 1


def test_bad_outputs_say_so(tmp_path):
    with pytest.raises(VolumeError, match="whole store"):
        V.create_volume(f"{tmp_path}/o.ome.zarr:/0", (2, 3, 3), "uint8")
    with pytest.raises(VolumeError, match="Unsupported OME-Zarr version"):
        V.create_volume(f"{tmp_path}/o.ome.zarr", (2, 3, 3), "uint8", ome_version="0.3")
    with pytest.raises(VolumeError, match="option `levels`"):
        V.create_volume(f"{tmp_path}/o.ome.zarr", (2, 3, 3), "uint8", levels=0)
    assert os.listdir(tmp_path) == []
    V.write_volume(f"{tmp_path}/o.ome.zarr", np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(VolumeError, match="already exists"):
        V.create_volume(f"{tmp_path}/o.ome.zarr", (2, 3, 3), "uint8")


def test_upscale_engine_reads_zarr_and_writes_ome_zarr(tmp_path):
    from emzoo.engine import upscale_volume
    from emzoo_test_helpers import MeanModel, linear_along_z, random_volume

    volume = random_volume((3, 16, 16), np.uint8)
    V.write_volume(f"{tmp_path}/in.zarr:/raw", volume, voxel_size=(40, 4, 4))
    summary = upscale_volume(f"{tmp_path}/in.zarr:/raw", MeanModel(), factor=4,
                             output=str(tmp_path / "out.ome.zarr"), progress=False)
    assert summary["output_shape"] == (9, 16, 16)
    with V.open_volume(tmp_path / "out.ome.zarr") as out:
        assert out.voxel_size == (10.0, 4.0, 4.0) and out.dtype == np.uint8
        expected = linear_along_z(volume.astype(float), np.arange(9) / 4)
        assert np.abs(out.read_range(0, 9).astype(float) - expected).max() <= 0.5 + 1e-3
    assert sorted(os.listdir(tmp_path)) == ["in.zarr", "out.ome.zarr"]  # no temporary left behind


@pytest.mark.slow
def test_cli_upscales_zarr_to_ome_zarr_and_refuses_an_existing_output(tmp_path):
    def emzoo(*args):  # the console script, in a fresh interpreter
        code = "import sys\nfrom emzoo.apps.main import run\nsys.exit(run(['emzoo'] + sys.argv[1:]))"
        return subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=600)

    V.write_volume(f"{tmp_path}/in.zarr:/raw", np.random.default_rng(0).integers(0, 256, (3, 64, 64), np.uint8),
                   (20, 10, 10))
    done = emzoo("upscale", "in.zarr", "-o", "out.ome.zarr", "--factor", "2")
    assert done.returncode == 0, done.stderr
    with V.open_volume(tmp_path / "out.ome.zarr") as out:
        assert out.shape == (5, 64, 64) and out.voxel_size == (10.0, 10.0, 10.0)
    assert ome_reader_nodes(tmp_path / "out.ome.zarr")
    done = emzoo("upscale", "in.zarr:/raw", "-o", "out.ome.zarr", "--factor", "2")
    errors = [line for line in done.stderr.splitlines() if line.startswith("emzoo: error:")]
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(errors) == 1 and "already exists" in errors[0], done.stderr
    assert sorted(os.listdir(tmp_path)) == ["in.zarr", "out.ome.zarr"]


@pytest.mark.parametrize("scale, unit, match", [
    (["40", "4", "4"], "nanometer", r"invalid: a scale must be a list of positive numbers.*scale=\['40'"),
    ([40, 0, 4], "nanometer", r"invalid: a scale must be .*scale=\[40, 0, 4\]"),
    ([40, 4], "nanometer", r"invalid: the scale has 2 values for 3 axes"),
    ([40, 4, 4], "second", r"invalid: the unit of space axis 'z' is not a length.*unit='second'"),
])
def test_broken_ngff_metadata_is_refused_saying_what_was_found(tmp_path, random_stack, scale, unit, match):
    path = tmp_path / "broken.ome.zarr"
    write_ngff(path, "0.4", random_stack("uint8", (2, 3, 3)), (1, 1, 1), unit, axes="zyx")
    attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] = scale
    zarr.open_group(str(path), mode="r+").attrs.update(attrs)
    with pytest.raises(VolumeError, match=match):
        V.open_volume(path)
