"""Quality table: linear, cubic and optical-flow baselines, a model, and the model adapted to each
input, with the protocol of `emzoo evaluate` (keep every F-th slice, score the dropped ones).

Adaptation sees only the kept slices of the evaluated range (the input a user would have), at the
spacing they have after dropping (z spacing x F); it never reads a scored slice.

Never run in CI. Example (the full table of the quality issue; hours on a 2-core CPU):
    python benchmarks/bench_quality.py --factors 2 4 8 --minutes 2 5 10 \
        --regions fibsem-val cube2 isbi-val --json quality.json
A quick look:
    python benchmarks/bench_quality.py --factors 4 --minutes 2 --regions fibsem-val
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
BINNED = {"cube2-bin2": ("cube2-all", (2, 2, 2)), "cube2-z2": ("cube2-all", (2, 1, 1)),
          "cube2-xy2": ("cube2-all", (1, 2, 2))}


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--factors", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--minutes", type=float, nargs="*", default=[2, 5, 10])
    parser.add_argument("--regions", nargs="+", default=["fibsem-val", "cube2", "isbi-val"],
                        choices=sorted({**REGIONS, **BINNED}))
    parser.add_argument("--baselines", default="linear,cubic,flow")
    parser.add_argument("--json", default=None, help="also write the rows as JSON")
    args = parser.parse_args()

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
