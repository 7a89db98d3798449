"""cremi_triplet preparation: alignment recovers known shifts; filters, split and outputs."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from emzoo.data import prepare as P


def _smooth_texture(shape, seed=0):
    """Random texture with structure at a few pixels (so NCC has a sharp, unique peak)."""
    rng = np.random.default_rng(seed)
    noise = rng.random(shape)
    kernel = np.outer(np.hanning(7), np.hanning(7))
    spectrum = np.fft.rfft2(noise) * np.fft.rfft2(kernel, shape)
    image = np.fft.irfft2(spectrum, shape)
    image = (image - image.min()) / (image.max() - image.min())
    return (20 + image * 215).astype(np.uint8)


# Position of each slice's window inside the big texture: slice z pixel p = texture[p + corner[z]].
CORNERS = [(20, 20), (23, 18), (23, 18), (17, 25), (21, 22), (26, 15), (24, 19)]


def _shifted_cremi_file(path, size=96):
    texture = _smooth_texture((size + 60, size + 60))
    raw = np.stack([texture[y:y + size, x:x + size] for y, x in CORNERS])
    with h5py.File(path, "w") as f:
        f.create_dataset("volumes/raw", data=raw).attrs["resolution"] = (40.0, 4.0, 4.0)
    return raw


def test_estimate_shift_recovers_known_translation():
    texture = _smooth_texture((128, 128))
    reference = texture[10:90, 10:90]
    moving = texture[15:95, 7:87]  # moving[p] = reference[p + (5, -3)]
    (dy, dx), peak = P.estimate_shift(reference, moving, max_shift=12)
    assert (dy, dx) == (5, -3) and peak > 0.99


def test_alignment_recovers_chained_shifts(tmp_path):
    path = tmp_path / "sample.hdf"
    _shifted_cremi_file(path)
    from emzoo.data.volumes import open_volume

    volume = open_volume(f"{path}:/volumes/raw")
    offsets, peaks = P.align_offsets(volume, max_shift=12)
    expected = np.asarray(CORNERS) - np.asarray(CORNERS[0])
    np.testing.assert_array_equal(offsets, expected)
    region = P.common_region(offsets, volume.shape[1:])
    first = P.aligned_slice(volume, 0, offsets, region)
    for z in range(1, len(volume)):
        np.testing.assert_array_equal(P.aligned_slice(volume, z, offsets, region), first)


def test_prepare_writes_split_tfrecords_and_drops_defects(tmp_path):
    path = tmp_path / "sample.hdf"
    raw = _shifted_cremi_file(path)
    with h5py.File(path, "a") as f:  # black out slice 3 (a defective section)
        f["volumes/raw"][3] = 0
    out = tmp_path / "triplets"
    summary = P.prepare_triplets([str(path)], out, format="tfrecord", size=32, stride=32, max_shift=12,
                                 split=(3, 1, 1))
    assert raw.shape[0] == 7
    # z-ranges 3:1:1 of 7 slices: train 0..3, validation 4, test 5..6 -> only train triplets (1,2,3) fit,
    # and those touching the blank slice 3 are dropped.
    assert summary["dropped"]["blank_or_flat"] > 0
    assert summary["inputs"][0]["shifts"][1] == [3, -2]
    assert set(os.listdir(out)) == {"prepare_summary.json", "train.tfrecord-00000-of-00001",
                                    "validation.tfrecord-00000-of-00001", "test.tfrecord-00000-of-00001"}
    from emzoo.data.tfrecord import read_film_tfrecord

    records = list(read_film_tfrecord(str(out / "train.tfrecord@1")))
    assert len(records) == summary["counts"]["train"] > 0
    x0, y, x1, name = records[0]
    assert y.shape == (32, 32, 1) and ":z1:" in name
    # aligned: the three frames of a tile show the same texture (histogram-specified, so nearly equal)
    assert P.continuity_ncc(x0[..., 0], y[..., 0]) > 0.95
    assert json.loads((out / "prepare_summary.json").read_text())["counts"] == summary["counts"]


def test_prepare_hdf5_output_and_refuses_existing(tmp_path):
    path = tmp_path / "sample.h5"
    _shifted_cremi_file(path)
    out = tmp_path / "h5out"
    summary = P.prepare_triplets([f"{path}:/volumes/raw"], out, format="hdf5", size=32, stride=16, max_shift=12,
                                 split=(1, 0, 0))
    with h5py.File(out / "train.h5") as f:
        assert f["triplets"].shape == (summary["counts"]["train"], 3, 32, 32) and f["triplets"].dtype == np.uint8
    with pytest.raises(Exception, match="already exists"):
        P.prepare_triplets([str(path)], out, format="hdf5", size=32, max_shift=12)
    assert sorted(os.listdir(tmp_path)) == ["h5out", "sample.h5"]


def test_weak_continuity_is_dropped():
    rng = np.random.default_rng(0)
    a = rng.random((32, 32))
    assert P.continuity_ncc(a, a) == pytest.approx(1.0)
    assert abs(P.continuity_ncc(a, rng.random((32, 32)))) < 0.5


def test_app_one_line_error_and_no_output(tmp_path):
    out = tmp_path / "o"
    result = subprocess.run([sys.executable, "-m", "emzoo.apps.main", "prepare", str(tmp_path / "missing.hdf"),
                             "-o", str(out)], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)  # not the checkout, whose emzoo/ would shadow the installed one
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "missing.hdf" in result.stderr
    assert not out.exists() and os.listdir(tmp_path) == []


def test_float_volume_outside_unit_range_is_prepared_like_its_integer_twin(tmp_path):
    # Float data in about [-1.6, 2.7] is normalised by its own range (emzoo.data.volumes.base):
    # its tiles are not taken for blank because raw values fall outside [0, 1].
    counts = {}
    for name, scale in (("uint8", None), ("float", 1 / 50)):
        path = tmp_path / f"{name}.h5"
        raw = _shifted_cremi_file(path)
        if scale is not None:
            with h5py.File(path, "a") as f:
                del f["volumes/raw"]
                f.create_dataset("volumes/raw", data=(raw * scale - 2).astype(np.float32))
        summary = P.prepare_triplets([str(path)], tmp_path / f"out_{name}", format="hdf5", size=32,
                                     stride=16, max_shift=12, split=(1, 0, 0))
        counts[name] = summary["counts"]["train"]
    assert counts["float"] == counts["uint8"] > 0
