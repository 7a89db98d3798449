"""Makes the pictures of the site's "Models and scores" page from real emzoo runs.

Two figures, both drawn with Pillow from the outputs of the ``emzoo`` commands themselves:

- ``docs/figures/xz_cube2_x8.png``: one x-z plane (z down, x across) of the first 65 slices of
  FlyEM training cube 2 (10 nm isotropic, held out from every default's training): the truth,
  then every 8th slice upscaled x8 back to 65 slices by linear interpolation, by
  ``emzoo upscale --model flow`` (optical flow) and by ``emzoo upscale`` with the bundled default.
  The rows of the kept slices are marked on the left.
- ``docs/figures/gain_over_linear.png``: PSNR over linear interpolation (dB) per factor, for
  optical flow and the default, on the FIB-SEM stack's validation block and on cube 2 (z 0..64),
  from ``emzoo evaluate default --baselines linear,flow --json`` at x2, x4 and x8 (the protocol
  and regions of ``benchmarks/bench_quality.py``, so the bars match the zoo table).

The scores each run printed are kept in ``docs/figures/scores.json``. Needs the test extras
(``pip install ".[cpu,test]"``: OpenCV for the flow baseline) and the data in ``../shared/data``.
A few minutes on two CPU cores.

Example:
    python docs/make_figures.py                       # both figures
    python docs/make_figures.py --only xz             # the x-z views only
    python docs/make_figures.py --only chart          # redraw the chart from scores.json
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import tifffile
from PIL import Image, ImageDraw, ImageFont

HERE = pathlib.Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
OUT = HERE / "figures"
FIBSEM = "flyem_medulla_fibsem_10nm/volume.tif"
CUBE2 = "flyem_medulla_training_cubes/cube2.tif"
FACTORS = (2, 4, 8)


def emzoo(*args):
    """Runs one ``emzoo`` command (the installed CLI of this interpreter) and stops on failure."""
    command = [sys.executable, "-m", "emzoo.apps.main", *map(str, args)]
    print("$ emzoo", " ".join(map(str, args)), flush=True)
    done = subprocess.run(command, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if done.returncode != 0:
        sys.exit(f"make_figures: `emzoo {' '.join(map(str, args))}` failed: {done.stderr.strip()}")
    print(done.stdout.strip(), flush=True)


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def cube2_head(data, folder):
    """A TIFF of cube 2's z 0..64, the region the zoo table calls "cube 2"."""
    path = folder / "cube2_z0-64.tif"
    volume = tifffile.imread(data / CUBE2)[:65]
    tifffile.imwrite(path, volume, imagej=True, resolution=(0.1, 0.1),
                     metadata={"spacing": 10, "unit": "nm", "axes": "ZYX"})
    return path, volume


def xz_figure(data, folder, scores):
    factor = 8
    _, truth = cube2_head(data, folder)
    kept = folder / "kept.tif"
    tifffile.imwrite(kept, truth[::factor], imagej=True, resolution=(0.1, 0.1),
                     metadata={"spacing": 10 * factor, "unit": "nm", "axes": "ZYX"})
    emzoo("upscale", kept, "-o", folder / "default.tif", "--factor", factor)
    emzoo("upscale", kept, "-o", folder / "flow.tif", "--factor", factor, "--model", "flow")
    z = np.arange(truth.shape[0])
    kept_z = z[::factor]
    flat = truth[::factor].reshape(len(kept_z), -1).astype(np.float64)
    linear = np.stack([np.interp(z, kept_z, flat[:, i]) for i in range(flat.shape[1])], axis=1)
    linear = np.clip(linear.reshape((len(z),) + truth.shape[1:]) + 0.5, 0, 255).astype(np.uint8)
    panels = {"truth": truth, "linear": linear,
              "optical flow": tifffile.imread(folder / "flow.tif"),
              "default": tifffile.imread(folder / "default.tif")}
    y = truth.shape[1] // 2
    dropped = np.setdiff1d(z, kept_z)

    def dropped_psnr(volume):  # the mean over reconstructed slices, as emzoo evaluate scores
        error = volume[dropped].astype(np.float64) - truth[dropped]
        return float(np.mean(10 * np.log10(255 ** 2 / np.mean(error ** 2, axis=(1, 2)))))

    scale, gap, title, margin, columns = 2, 12, 22, 14, 2
    width, height = truth.shape[2] * scale, truth.shape[0] * scale
    rows = -(-len(panels) // columns)
    sheet = Image.new("RGB", (margin + columns * (width + gap), rows * (title + height + gap) + 22),
                      "white")
    draw = ImageDraw.Draw(sheet)
    font = _font(15)
    for k, (name, volume) in enumerate(panels.items()):
        assert volume.shape == truth.shape, (name, volume.shape)
        plane = Image.fromarray(np.ascontiguousarray(volume[:, y, :])).resize((width, height),
                                                                            Image.NEAREST)
        left = margin + (k % columns) * (width + gap)
        top = (k // columns) * (title + height + gap)
        sheet.paste(plane, (left, top + title))
        label = name if name == "truth" else f"{name}: {dropped_psnr(volume):.2f} dB"
        draw.text((left, top + 3), label, fill="black", font=font)
        if k % columns == 0:
            for zk in kept_z:  # the kept slices: the only rows every method was given
                row = top + title + zk * scale + scale // 2
                draw.line((2, row, margin - 4, row), fill=(200, 0, 0), width=2)
    draw.text((margin, rows * (title + height + gap)), f"x-z plane (y = {y}) of cube 2, z 0..64, 10 nm, "
              f"z down: every {factor}th slice kept (red), the rest reconstructed; PSNR on those", fill="black", font=_font(13))
    OUT.mkdir(exist_ok=True)
    sheet.save(OUT / "xz_cube2_x8.png", optimize=True)
    scores["xz_cube2_x8_psnr_dropped_uint8"] = {name: round(dropped_psnr(v), 3)
                                                for name, v in panels.items() if name != "truth"}


def gain_figure(data, folder, scores):
    cube2, _ = cube2_head(data, folder)
    regions = {"FIB-SEM validation block": ["--data", data / FIBSEM, "--split", "validation"],
               "cube 2 (z 0..64)": ["--data", cube2]}
    for region, args in regions.items():
        for factor in FACTORS:
            out = folder / f"scores_{region[:4]}_{factor}.json"
            emzoo("evaluate", "default", *args, "--factor", factor, "--baselines", "linear,flow",
                  "--json", out)
            methods = json.loads(out.read_text())["methods"]
            scores.setdefault("psnr", {}).setdefault(region, {})[f"x{factor}"] = {
                name: method["mean"]["psnr"] for name, method in methods.items()}
    draw_gain(scores["psnr"])


def draw_gain(psnr):
    """The bar chart of PSNR over linear, from {region: {"x2": {method: psnr}}} as recorded."""
    gains = {(region, factor): {name: value - means["linear"] for name, value in means.items()
                                if name != "linear"}
             for region, by_factor in psnr.items() for factor, means in by_factor.items()}
    methods = sorted(next(iter(gains.values())), key=lambda name: name != "flow")
    colours = dict(zip(methods, [(120, 120, 120), (214, 96, 40), (60, 110, 190)]))
    values = [value for gain in gains.values() for value in gain.values()]
    high = max(1.5, max(values) + 0.15)
    low = min(0.0, min(values) - 0.15)
    chart_w, chart_h, left, top, bottom = 860, 400, 60, 40, 62
    image = Image.new("RGB", (chart_w, chart_h), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(14), _font(12)
    plot_h = chart_h - top - bottom

    def ypos(db):
        return top + (high - db) / (high - low) * plot_h

    tick = np.ceil(low / 0.5) * 0.5
    while tick <= high + 1e-9:
        draw.line((left, ypos(tick), chart_w - 10, ypos(tick)), fill=(225, 225, 225))
        draw.text((8, ypos(tick) - 7), f"{tick:+.1f}" if abs(tick) > 1e-9 else " 0", fill="black",
                  font=small)
        tick += 0.5
    draw.text((left, 8), "PSNR over linear interpolation (dB), emzoo evaluate's protocol",
              fill="black", font=font)
    group_w = (chart_w - left - 20) / len(gains)
    bar_w = group_w / (len(methods) + 1.5)
    regions_seen = set()
    for g, ((region, factor), gain) in enumerate(gains.items()):
        x0 = left + g * group_w + bar_w * 0.75
        for m, name in enumerate(methods):
            value = gain[name]
            x = x0 + m * bar_w
            draw.rectangle((x, min(ypos(value), ypos(0)), x + bar_w - 3, max(ypos(value), ypos(0))),
                           fill=colours[name])
            label_y = ypos(value) - 14 if value >= 0 else ypos(value) + 2
            draw.text((x, label_y), f"{value:+.2f}", fill="black", font=small)
        draw.text((x0 + bar_w * 0.6, chart_h - bottom + 6), factor, fill="black", font=font)
        if region not in regions_seen:
            regions_seen.add(region)
            draw.text((x0, chart_h - bottom + 28), region, fill="black", font=small)
    for m, name in enumerate(methods):
        x = chart_w - 260 + m * 120
        draw.rectangle((x, 10, x + 12, 22), fill=colours[name])
        draw.text((x + 16, 8), "optical flow" if name == "flow" else name, fill="black", font=small)
    draw.line((left, ypos(0), chart_w - 10, ypos(0)), fill="black")
    OUT.mkdir(exist_ok=True)
    image.save(OUT / "gain_over_linear.png", optimize=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=pathlib.Path, default=DATA, help="the shared data folder")
    parser.add_argument("--only", choices=("xz", "gain", "chart"),
                        help="make one figure only (chart: redraw the gain chart from the scores "
                             "recorded in docs/figures/scores.json, without running anything)")
    args = parser.parse_args()
    if not (args.data / CUBE2).exists():
        sys.exit(f"make_figures: the EM data was not found. Expected {args.data / CUBE2}. "
                 f"Received: --data={args.data}")
    scores_path = OUT / "scores.json"
    scores = json.loads(scores_path.read_text()) if scores_path.exists() else {}
    if args.only == "chart":
        draw_gain(scores["psnr"])
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "xz"):
            xz_figure(args.data, pathlib.Path(tmp), scores)
        if args.only in (None, "gain"):
            gain_figure(args.data, pathlib.Path(tmp), scores)
    OUT.mkdir(exist_ok=True)
    scores_path.write_text(json.dumps(scores, indent=1) + "\n")
    print("wrote", ", ".join(sorted(p.name for p in OUT.glob("*"))))


if __name__ == "__main__":
    main()
