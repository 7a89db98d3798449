"""Regenerates the bundled default model's training data and prints the commands that trained it.

The recipe of the bundled default (third version; every command is recorded in
``zoo_configs/default.json``, ``metadata.training``): fine-tune the first default, with the L2 loss,
on every region of ../shared/data that is not held out for validation, in bfloat16 mixed precision
(about 1.4x faster per step than float32 on this AVX512-BF16 CPU; the weights stay float32), with
gaps 1, 2 and 4 and then gap 1 (the second default); then 2000 more steps with gaps 1, 2 and 4 at
learning rate 5e-5, 100 steps of gap 1 from there, and the weight average 0.7 / 0.3 of those two
(``recipes/average_weights.py``). The training data:

- the FIB-SEM stack's training part (z 0..77; z 78..96 is the validation block);
- ``cube1`` of the training cubes, along z and also along y and along x: the cubes are 10 nm
  isotropic, so triplets of planes perpendicular to y or x are physically the same task as
  triplets along z, and they triple the data (``cube2`` is held out whole);
- the ISBI ssTEM stack's training part (z 0..23).

Held out: the FIB-SEM validation block and all of ``cube2`` (whole regions, never slices
interleaved with training ones). ``emzoo train`` also keeps the last 5 % of each file it is given
for its own end-of-run validation (``--val-fraction 0.05``).

Never run in CI. Example:
    python recipes/train_default.py --out /tmp/default-data     # writes the five TIFFs
    # then run the command it prints (about 0.6 s per step on 2 idle cores)
"""

import argparse
import pathlib

import numpy as np
import tifffile

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def write(path, array, z_um, xy_um):
    """A (Z, Y, X) uint8 ImageJ TIFF with its voxel size (micrometres)."""
    tifffile.imwrite(path, np.ascontiguousarray(array), imagej=True, resolution=(1 / xy_um, 1 / xy_um),
                     metadata={"spacing": z_um, "unit": "um", "axes": "ZYX"})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the training TIFFs (created)")
    parser.add_argument("--steps", type=int, default=6000)
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=False)
    fibsem = tifffile.imread(DATA / "flyem_medulla_fibsem_10nm" / "volume.tif")
    cube1 = tifffile.imread(DATA / "flyem_medulla_training_cubes" / "cube1.tif")
    isbi = tifffile.imread(DATA / "isbi2012_sstem" / "volume.tif")
    files = {"fib_z.tif": (fibsem[:78], 0.01, 0.01),
             "cube1_z.tif": (cube1, 0.01, 0.01),
             "cube1_y.tif": (cube1.transpose(1, 0, 2), 0.01, 0.01),  # planes perpendicular to y
             "cube1_x.tif": (cube1.transpose(2, 0, 1), 0.01, 0.01),  # planes perpendicular to x
             "isbi_z.tif": (isbi[:24], 0.05, 0.004)}
    for name, (array, z_um, xy_um) in files.items():
        write(out / name, array, z_um, xy_um)
    data = ",".join(str(out / name) for name in files)
    print(f"emzoo train default --data {data} --steps {args.steps} --batch-size 8 --crop 128 "
          "--gaps 1,2,4 --learning-rate 1e-4 --val-fraction 0.05 --checkpoint-every 500 "
          "--mixed-precision -o runs/default-v2")


if __name__ == "__main__":
    main()
