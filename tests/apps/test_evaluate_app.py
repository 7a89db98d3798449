"""``emzoo evaluate`` end to end, through a subprocess (each app defines its own absl flags).

Baselines only (model ``none``) and a tiny saved FILM on a synthetic 9 x 40 x 40 stack: the
printed table, the JSON (per-slice values and their means, checked against an independent
computation of the linear baseline) and the PNG figure. Bad input must give one line on stderr,
a non-zero exit, no traceback and no partial JSON or PNG. The protocol itself is covered by
tests/test_evaluate.py.
"""

import json
import os

import numpy as np
import pytest

from app_runner import assert_one_line_error, error_lines, run_emzoo
from emzoo.data.volumes import write_volume
from emzoo.testing import TINY_FILM


def synthetic_stack(depth=9, size=40, seed=0):
    """Smooth structure that moves with z, plus noise: linear and cubic differ, neither is exact."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0:depth, 0:size, 0:size]
    stack = 127 + 60 * np.sin(x / 5 + z / 3) + 40 * np.cos(y / 7 - z / 4) + rng.normal(0, 5, z.shape)
    return np.clip(stack, 0, 255).astype(np.uint8)


def linear_psnr(stack, z, factor):
    """PSNR (data range 255) of the linear reconstruction of slice z from its kept neighbours."""
    before = (z // factor) * factor
    t = (z - before) / factor
    guess = (1 - t) * stack[before].astype(np.float64) + t * stack[before + factor].astype(np.float64)
    mse = np.mean((guess - stack[z].astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def stack_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "stack.tif"
    write_volume(str(path), synthetic_stack(), voxel_size=(10, 10, 10))
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A saved tiny FILM folder (random weights), loadable by path."""
    import emzoo
    from emzoo import zoo

    model = zoo.build_model({"architecture": "film", "config": {}}, **TINY_FILM)
    return str(emzoo.save(model, tmp_path_factory.mktemp("models") / "tiny-film"))


def check_png(path):
    from PIL import Image

    with Image.open(path) as image:
        image.verify()  # a complete, valid PNG
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("L"))
    assert min(pixels.shape) >= 192 and pixels.std() > 10  # drawn, not blank
    return pixels.shape


def test_baselines_only_print_a_table_and_write_json_and_png(tmp_path, stack_path):
    done = run_emzoo(["evaluate", "none", "--data", str(stack_path), "--factor", "2",
                      "--json", "out.json", "--figure", "fig.png"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(os.listdir(tmp_path)) == ["fig.png", "out.json"]  # no temporaries left

    report = json.loads((tmp_path / "out.json").read_text())
    assert report["factor"] == 2 and report["model"] is None and report["shape"] == [9, 40, 40]
    assert report["kept"] == [0, 2, 4, 6, 8] and report["dropped"] == [1, 3, 5, 7]
    assert list(report["methods"]) == ["linear", "cubic"]
    stack = synthetic_stack()
    for name, result in report["methods"].items():
        rows = result["per_slice"]
        assert [row["z"] for row in rows] == [1, 3, 5, 7]
        for metric in ("psnr", "ssim", "ie"):
            assert result["mean"][metric] == pytest.approx(np.mean([row[metric] for row in rows]))
    for row in report["methods"]["linear"]["per_slice"]:
        assert row["psnr"] == pytest.approx(linear_psnr(stack, row["z"], 2), abs=1e-6)
    # The cubic spline is a different reconstruction, not a copy of the linear one.
    assert report["methods"]["cubic"]["mean"]["psnr"] != report["methods"]["linear"]["mean"]["psnr"]

    table = done.stdout.splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("method"))
    for name, line in zip(("linear", "cubic"), table[header + 1:header + 3]):
        cells = line.split()
        mean = report["methods"][name]["mean"]
        assert cells[0] == name and cells[-1] == "4"
        assert float(cells[1]) == pytest.approx(mean["psnr"], abs=5e-4)
        assert float(cells[2]) == pytest.approx(mean["ssim"], abs=5e-5)
    check_png(tmp_path / "fig.png")


@pytest.mark.slow
def test_saved_model_folder_is_scored_beside_the_baselines(tmp_path, stack_path, tiny_model):
    done = run_emzoo(["evaluate", tiny_model, "--data", str(stack_path), "--factor", "2",
                      "--baselines", "linear", "--json", "out.json", "--figure", "fig.png"],
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["model"] == tiny_model
    assert list(report["methods"]) == ["linear", tiny_model]
    rows = report["methods"][tiny_model]["per_slice"]
    assert [row["z"] for row in rows] == [1, 3, 5, 7]
    assert all(np.isfinite(row[m]) for row in rows for m in ("psnr", "ssim", "ie"))
    # Random weights: the scores are its own, not the baseline's.
    assert rows != report["methods"]["linear"]["per_slice"]
    assert any(line.startswith(tiny_model) for line in done.stdout.splitlines())
    assert "(array)" not in done.stdout + done.stderr  # the engine's internal summary line
    check_png(tmp_path / "fig.png")


@pytest.mark.parametrize("make_input, flags, match", [
    (None, ["--factor", "2"], "No such file"),
    ("short", ["--factor", "4"], "too few for factor 4"),
    ("image", ["--factor", "2"], "2-D image"),
    ("stack", ["--factor", "0"], "factor"),
    ("stack", ["--factor", "2.5"], "whole number"),  # a valid upscaling factor the protocol can't use
    ("stack", ["--factor", "2", "--baselines", "bicubic"], "Unknown baseline"),
    ("stack", ["--factor", "2", "--crop", "64"], "crop"),
])
def test_bad_input_gives_one_line_and_no_partial_output(tmp_path, make_input, flags, match):
    import tifffile

    source = tmp_path / "in.tif"
    if make_input == "short":
        write_volume(str(source), synthetic_stack(depth=4))
    elif make_input == "image":
        tifffile.imwrite(str(source), synthetic_stack(depth=1)[0])
    elif make_input == "stack":
        write_volume(str(source), synthetic_stack())
    before = sorted(os.listdir(tmp_path))
    done = run_emzoo(["evaluate", "none", "--data", str(source), "--json", "out.json",
                      "--figure", "fig.png"] + flags, cwd=tmp_path)
    assert_one_line_error(done, match, tmp_path, before)  # no JSON, PNG or temporary written


def test_missing_output_folder_is_refused_before_any_work(tmp_path, stack_path):
    done = run_emzoo(["evaluate", "none", "--data", str(stack_path), "--factor", "2",
                      "--figure", str(tmp_path / "nowhere" / "fig.png")], cwd=tmp_path)
    lines = error_lines(done)
    assert done.returncode != 0 and len(lines) == 1 and "--figure" in lines[0], lines
    assert os.listdir(tmp_path) == []


def test_figure_error_maps_heat_scale_and_labels(tmp_path):
    from PIL import Image

    from emzoo import figures

    heat = figures._heat(np.linspace(0.0, 1.0, 11)[None, :])[0].astype(float)
    assert heat[0].tolist() == [0, 0, 0] and heat[-1].tolist() == [255, 255, 255]
    luminance = heat @ [0.299, 0.587, 0.114]
    assert np.all(np.diff(luminance) > 0)  # brighter always means a larger error
    flat = np.full((20, 30), 0.25)
    assert np.allclose(figures._gaussian_blur(flat, 2.0), flat)
    assert figures._short_name("/runs/film-em/") == "film-em" and figures._short_name("cubic") == "cubic"

    truth = np.random.default_rng(0).random((48, 48))
    path = figures.comparison_figure(tmp_path / "fig.png", {"ground truth": truth, "exact": truth,
                                                            "/a/b/model": truth[::-1]}, title="t")
    assert os.listdir(tmp_path) == ["fig.png"]
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    # The exact reconstruction's error map (column 1, bottom row) is black; the wrong one is not.
    cell = 48 * 4  # 48-pixel crops are zoomed to at least 192 pixels
    column_x = [6 + c * (cell + 6) for c in range(3)]
    bottom = pixels[-6 - cell // 2]
    assert bottom[column_x[1] + 10:column_x[1] + cell - 10].max() == 0
    assert bottom[column_x[2] + 10:column_x[2] + cell - 10].max() > 100


# Nothing is read or built: an existing output must be refused before any work.
NO_WORK = """
    import emzoo.data.volumes, emzoo.zoo
    def _no_work(*args, **kwargs):
        raise AssertionError("work started")
    emzoo.data.volumes.open_volume = _no_work
    emzoo.zoo.load = _no_work
"""


@pytest.mark.parametrize("flag, name", [("--json", "out.json"), ("--figure", "fig.png")])
def test_existing_json_or_figure_is_kept_without_overwrite(tmp_path, stack_path, tiny_model,
                                                           flag, name):
    target = tmp_path / name
    target.write_bytes(b"precious")
    before = sorted(os.listdir(tmp_path))
    done = run_emzoo(["evaluate", tiny_model, "--data", str(stack_path), flag, name],
                     cwd=tmp_path, prelude=NO_WORK)
    assert_one_line_error(done, "--overwrite", tmp_path, before)
    assert name in error_lines(done)[0]
    assert target.read_bytes() == b"precious"


@pytest.mark.slow   # two evaluate runs
def test_overwrite_replaces_json_and_figure_leaving_no_temporaries(tmp_path, stack_path):
    for name in ("out.json", "fig.png"):
        (tmp_path / name).write_bytes(b"old")
    done = run_emzoo(["evaluate", "none", "--data", str(stack_path), "--baselines", "linear",
                      "--json", "out.json", "--figure", "fig.png", "--overwrite"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path)) == ["fig.png", "out.json"]
    assert json.loads((tmp_path / "out.json").read_text())["factor"] == 2
    check_png(tmp_path / "fig.png")


def test_an_ensemble_member_without_weights_is_refused_before_any_work(tmp_path, stack_path):
    before = sorted(os.listdir(tmp_path))
    done = run_emzoo(["evaluate", "default+tsain", "--data", str(stack_path), "--json", "out.json"],
                     cwd=tmp_path)
    assert_one_line_error(done, "tsain", tmp_path, before)
