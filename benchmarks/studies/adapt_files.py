"""The judged path: `emzoo upscale` with and without `--adapt` on a TIFF of kept slices, scored from
the output files on the dropped slices.

Writes every F-th slice of a region to a plain TIFF (no voxel size unless ``--voxel-size``), runs
``emzoo upscale kept.tif -o base.tif --factor F`` and ``... -o adapted.tif --factor F --adapt M``,
and prints the PSNR of each output file (its stored dtype) on the dropped slices.

Never run in CI. Example:
    python benchmarks/studies/adapt_files.py --region cube2-bin2 --factor 4 --minutes 2 \
        --out /tmp/judged
"""

import argparse
import os
import pathlib
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # bench_quality

import numpy as np  # noqa: E402
import tifffile  # noqa: E402

from bench_quality import BINNED, REGIONS, region_volume  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--region", default="cube2-bin2", choices=sorted({**REGIONS, **BINNED}))
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--model", default="default")
    parser.add_argument("--voxel-size", action="store_true",
                        help="write the kept slices' voxel size into the TIFF (default: none)")
    parser.add_argument("--out", required=True, help="a new folder for the files")
    args = parser.parse_args()

    from emzoo.evaluate import protocol_indices

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=False)
    volume, voxel = region_volume(args.region)
    kept_z, dropped = protocol_indices(0, volume.shape[0], args.factor)
    truth = np.stack([volume.read(z) for z in range(kept_z[-1] + 1)])   # the range upscaled
    kept = np.ascontiguousarray(truth[kept_z])
    if args.voxel_size:
        um = [v / 1000.0 for v in voxel]
        tifffile.imwrite(out / "kept.tif", kept, imagej=True, resolution=(1 / um[2], 1 / um[1]),
                         metadata={"spacing": um[0] * args.factor, "unit": "um", "axes": "ZYX"})
    else:
        tifffile.imwrite(out / "kept.tif", kept)
    peak = float(np.iinfo(truth.dtype).max) if truth.dtype.kind in "iu" else 1.0
    for name, extra in (("base", []), ("adapted", ["--adapt", f"{args.minutes:g}"])):
        command = ["emzoo", "upscale", str(out / "kept.tif"), "-o", str(out / f"{name}.tif"),
                   "--factor", str(args.factor), "--model", args.model, "--quiet", *extra]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
        print(done.stdout.strip(), flush=True)
        output = tifffile.imread(out / f"{name}.tif").astype(np.float64)
        psnr = [10 * np.log10(peak ** 2 / np.mean((output[z] - truth[z]) ** 2)) for z in dropped]
        print(f"{args.region} x{args.factor} {name}: PSNR of the file on {len(dropped)} dropped "
              f"slices {np.mean(psnr):.3f}", flush=True)


if __name__ == "__main__":
    main()
