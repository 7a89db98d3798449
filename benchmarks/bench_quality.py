"""Quality table: linear, cubic and optical-flow baselines, a model, and the model adapted to each
input, with the protocol of `emzoo evaluate` (keep every F-th slice, score the dropped ones).

Adaptation sees only the kept slices of the evaluated range (the input a user would have), at the
spacing they have after dropping (z spacing x F); it never reads a scored slice.

With ``--zoo``, several models side by side (no adaptation): PSNR over linear per region and
factor, and each model's parameters, weights size, seconds per new 512 x 512 slice (measured in
the same run, one after the other) and training CPU-hours (from its metadata): the zoo table of
benchmarks/README.md and the README.

Never run in CI. Example (the full adaptation table; hours on a 2-core CPU):
    python benchmarks/bench_quality.py --factors 2 4 8 --minutes 2 5 10 \
        --regions fibsem-val cube2 isbi-val --json quality.json
A quick look:
    python benchmarks/bench_quality.py --factors 4 --minutes 2 --regions fibsem-val
The zoo table:
    python benchmarks/bench_quality.py --zoo --model default dan-em ssan-em tsain-em \
        --regions fibsem-val cube2 fibsem-xy2 cube2-xy2 fibsem-xy3 cube2-xy3 isbi-val --json zoo.json
Only the costs, side by side in one run (on an idle machine):
    python benchmarks/bench_quality.py --zoo --model default dan-em ssan-em tsain-em --regions
"""

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
# name: (path, split, z-range within the split or None, factors it is scored at)
REGIONS = {
    "fibsem-val": (DATA / "flyem_medulla_fibsem_10nm" / "volume.tif", "validation", None),
    "cube1": (DATA / "flyem_medulla_training_cubes" / "cube1.tif", "all", (0, 65)),
    "cube2": (DATA / "flyem_medulla_training_cubes" / "cube2.tif", "all", (0, 65)),
    "cube2-all": (DATA / "flyem_medulla_training_cubes" / "cube2.tif", "all", (0, 249)),
    "isbi-val": (DATA / "isbi2012_sstem" / "volume.tif", "validation", None),
}
# name: (region, (z, y, x) bin): a region binned (mean of the bin's voxels) to a voxel size no
# default trained on, a stand-in for another microscope. cube2-bin2: 20 nm isotropic (structures
# half as many pixels wide, less noise). cube2-z2: 10 x 10 x 20 nm (z x2 coarser than x/y, as
# many FIB-SEM and some ssTEM stacks): kept every 2nd slice, the input's z spacing is 4x its x
# spacing, so x2 upscaling there is adapted (the range is on the spacing, not on the factor).
# cube2-xy2: 20 x 20 x 10 nm (z finer than x/y, as FIB-SEM milled finer than its pixels): x8
# upscaling there is adapted (kept slices 80 nm apart, 4x the x spacing).
# fibsem-xy2 / -xy3, cube2-xy3: 20 / 30 nm pixels with 10 nm slices, the pixel sizes labs image
# FIB-SEM at (the zoo's robustness across pixel sizes is scored there).
BINNED = {"cube2-bin2": ("cube2-all", (2, 2, 2)), "cube2-z2": ("cube2-all", (2, 1, 1)),
          "cube2-xy2": ("cube2-all", (1, 2, 2)), "cube2-xy3": ("cube2-all", (1, 3, 3)),
          "fibsem-xy2": ("fibsem-val", (1, 2, 2)), "fibsem-xy3": ("fibsem-val", (1, 3, 3))}


def bin_volume(array, factors):
    """Mean of each ``factors`` = (z, y, x) block of a (Z, Y, X) array (edges that do not fill one
    dropped), rounded back to the array's dtype."""
    shape = [n // f for n, f in zip(array.shape, factors)]
    blocks = array[:shape[0] * factors[0], :shape[1] * factors[1], :shape[2] * factors[2]].reshape(
        shape[0], factors[0], shape[1], factors[1], shape[2], factors[2])
    mean = blocks.mean(axis=(1, 3, 5))
    return (np.round(mean) if array.dtype.kind in "iu" else mean).astype(array.dtype)


def region_volume(name):
    """(volume as an in-memory array volume of the scored z-range, its voxel size)."""
    from emzoo.data.volumes import ArrayVolume, open_volume
    from emzoo.evaluate import evaluation_range

    if name in BINNED:
        region, factors = BINNED[name]
        volume, voxel = region_volume(region)
        array = bin_volume(np.stack([volume.read(z) for z in range(volume.shape[0])]), factors)
        voxel = tuple(v * f for v, f in zip(voxel, factors))
        label = "x".join(str(f) for f in factors)
        return ArrayVolume(array, voxel, path=f"{volume.path} binned {label}"), voxel
    path, split, z_range = REGIONS[name]
    source = open_volume(str(path))
    start, stop = evaluation_range(source.shape[0], split)
    if z_range is not None:
        start, stop = start + z_range[0], start + z_range[1]
    array = np.stack([source.read(z) for z in range(start, stop)])
    return ArrayVolume(array, source.voxel_size, path=f"{path}[{start}:{stop}]"), source.voxel_size


def kept_slices(volume, factor):
    from emzoo.evaluate import protocol_indices

    kept, _ = protocol_indices(0, volume.shape[0], factor)
    return np.stack([volume.read(z) for z in kept])


def _gain(report, name):
    """The adapted weights' gain over the base on one self-validation set (dB), as text (the axial
    error is scored only for weights that passed the lateral margin)."""
    before, after = report[f"{name}_before"], report[f"{name}_after"]
    scored = name != "axial" or report["improved"]
    if not scored or before is None or after is None or not after > 0:
        return "n/a"
    return f"{10 * np.log10(before / after):+.3f} dB"


def seconds_per_slice(model, size=512, pairs=4, repeats=2):
    """Seconds per new slice of ``model`` upscaling ``pairs + 1`` random size x size slices x2
    (float32, the best of ``repeats`` after one warm-up run; without the calibration, a cost
    per job of about 2 x 4 midpoints of 512 x 512 that a long job does not feel)."""
    from emzoo.engine import upscale_volume

    rng = np.random.default_rng(0)
    stack = rng.integers(0, 256, (pairs + 1, size, size), dtype=np.uint8)
    upscale_volume(stack[:2], model, factor=2, calibrate=False)  # warm-up: tracing, compilation
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        upscale_volume(stack, model, factor=2, calibrate=False)
        best = min(best, time.perf_counter() - start)
    return best / pairs


def _weights_mb(name):
    """Size of a zoo entry's weights file in MB (None when it has none bundled)."""
    from emzoo import zoo

    entry = zoo.describe_model(name)
    weights = entry.get("weights") or {}
    path = weights.get("file")
    if not path:
        return None
    candidate = pathlib.Path(zoo.__file__).parent / path.removeprefix("emzoo:")  # package data
    return candidate.stat().st_size / 1e6 if candidate.exists() else None


def zoo_rows(models, regions, factors, baselines):
    """PSNR of every model and baseline on every region and factor, and each model's costs."""
    import emzoo
    from emzoo.engine.interpolators import ensemble_names, resolve_model
    from emzoo.evaluate import evaluate_volume

    # an ensemble "a+b" is scored as `emzoo upscale --model a+b` runs it
    loaded = {name: resolve_model(name) if ensemble_names(name) else emzoo.load(name, compile=False)
              for name in models}
    rows = []
    for region in regions:
        volume, _ = region_volume(region)
        for factor in ([2] if region.startswith("isbi") else factors):
            report = evaluate_volume(volume, factor, baselines=tuple(baselines))
            scores = {name: m["mean"]["psnr"] for name, m in report["methods"].items()}
            for name, model in loaded.items():
                scored = evaluate_volume(volume, factor, model=model, baselines=(), model_name=name)
                scores[name] = scored["methods"][name]["mean"]["psnr"]
            rows.append({"region": region, "factor": factor, "psnr": scores})
            print(f"{region} x{factor}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()),
                  file=sys.stderr, flush=True)
    costs = {}
    for name, model in loaded.items():
        members = ensemble_names(name) or [name]
        hours = [(emzoo.describe_model(m)["metadata"].get("training") or {}).get("cpu_hours")
                 for m in members]
        weights = [_weights_mb(m) for m in members]
        costs[name] = {"params": sum(int(m.count_params()) for m in getattr(model, "members", [model])),
                       "weights_mb": None if None in weights else sum(weights),
                       "seconds_per_slice": seconds_per_slice(model),
                       "training_cpu_hours": None if None in hours else sum(hours)}
    return rows, costs


def print_zoo_table(rows, costs):
    """Markdown: one row per model and baseline, one column per region and factor (dB over linear),
    then the model's costs."""
    columns = [(r["region"], r["factor"]) for r in rows]
    by_column = {(r["region"], r["factor"]): r["psnr"] for r in rows}
    names = [n for n in rows[0]["psnr"] if n != "linear"] if rows else list(costs)
    print("| model | " + "".join(f"{region} x{factor} | " for region, factor in columns)
          + "params | MB | s / slice | CPU-h |")
    print("|---" * (len(columns) + 5) + "|")
    if rows:
        print("| linear (dB) | " + " | ".join(f"{by_column[c]['linear']:.2f}" for c in columns)
              + " | | | | |")
    for name in names:
        cells = [f"{by_column[c][name] - by_column[c]['linear']:+.2f}" for c in columns]
        cost = costs.get(name)
        extra = (["", "", "", ""] if cost is None else [
            f"{cost['params']:,}", "" if cost["weights_mb"] is None else f"{cost['weights_mb']:.1f}",
            f"{cost['seconds_per_slice']:.2f}",
            "" if cost["training_cpu_hours"] is None else f"{cost['training_cpu_hours']:.1f}"])
        print(f"| {name} | " + " | ".join(cells + extra) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["default"])
    parser.add_argument("--zoo", action="store_true",
                        help="the zoo table: every --model side by side, no adaptation")
    parser.add_argument("--factors", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--minutes", type=float, nargs="*", default=[2, 5, 10])
    parser.add_argument("--regions", nargs="*", default=["fibsem-val", "cube2", "isbi-val"],
                        choices=sorted({**REGIONS, **BINNED}),
                        help="with --zoo, none (--regions alone) measures only the costs")
    parser.add_argument("--baselines", default="linear,cubic,flow")
    parser.add_argument("--json", default=None, help="also write the rows as JSON")
    args = parser.parse_args()
    if args.zoo:
        rows, costs = zoo_rows(args.model, args.regions, args.factors, args.baselines.split(","))
        print_zoo_table(rows, costs)
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps({"rows": rows, "costs": costs}, indent=2))
        return
    if len(args.model) != 1:
        parser.error("several --model need --zoo")
    args.model = args.model[0]

    import emzoo
    from emzoo.evaluate import evaluate_volume

    rows = []
    for region in args.regions:
        volume, voxel = region_volume(region)
        factors = [2] if region.startswith("isbi") else args.factors
        for factor in factors:
            base = emzoo.load(args.model, compile=False)
            report = evaluate_volume(volume, factor, model=base,
                                     baselines=tuple(args.baselines.split(",")), model_name=args.model)
            scores = {name: m["mean"]["psnr"] for name, m in report["methods"].items()}
            for minutes in args.minutes:
                start = time.monotonic()
                adapted = emzoo.adapt(args.model, kept_slices(volume, factor),
                                      voxel_size=(voxel[0] * factor, voxel[1], voxel[2]),
                                      factor=factor, minutes=minutes, progress=False)
                spent = time.monotonic() - start
                scored = evaluate_volume(volume, factor, model=adapted["model"], baselines=(),
                                         model_name="adapted")
                scores[f"adapted {minutes:g} min"] = scored["methods"]["adapted"]["mean"]["psnr"]
                print(f"  {region} x{factor} adapted {minutes:g} min ({spent:.0f} s, "
                      f"{adapted['steps']} steps, kept: {adapted['improved']}; self-validation: "
                      f"{_gain(adapted, 'validation')} lateral, {_gain(adapted, 'axial')} axial)",
                      file=sys.stderr)
            rows.append({"region": region, "factor": factor, "psnr": scores})
            line = ", ".join(f"{k} {v:.3f}" for k, v in scores.items())
            print(f"{region} x{factor}: {line}", flush=True)
    linear = {(r["region"], r["factor"]): r["psnr"].get("linear") for r in rows}
    print("\nPSNR (dB); in brackets: over linear")
    for row in rows:
        base = linear[(row["region"], row["factor"])]
        cells = [f"{k} {v:.3f}" + (f" ({v - base:+.2f})" if base is not None and k != "linear" else "")
                 for k, v in row["psnr"].items()]
        print(f"| {row['region']} | x{row['factor']} | " + " | ".join(cells) + " |")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
