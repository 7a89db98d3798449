"""Writes the zoo's multi-pixel-size training data and prints each trained entry's commands.

The trained entries (``tsain-em``, ``ssan-em``, ``dan-em``, and the default's fine-tune for other
pixel sizes) learn from every region of ../shared/data that is not held out, at several pixel
sizes, so that 20-30 nm FIB-SEM is familiar data, not only the 10 nm and 4 nm of the two stacks:

- the FIB-SEM stack's training part (z 0..77; z 78..96 is the validation block);
- ``cube1`` of the training cubes, along z and along y and x (the cubes are 10 nm isotropic, so
  planes perpendicular to y or x make the same task; ``cube2`` is held out whole);
- the ISBI ssTEM stack's training part (z 0..23);
- the FIB-SEM part and ``cube1`` (along z and y) binned 1.5x, 2x and 3x in (y, x) (15, 20, 30 nm
  pixels with the 10 nm slices: the gaps 1, 2, 4 of training then span z / x ratios from 0.3 to
  2.7), and ``cube1`` binned 2x in all three axes (20 nm isotropic, so gap 4 is an 80 nm step at
  20 nm pixels);
- one copy of the FIB-SEM part with black alignment margins (zero columns on the left, rows at the
  top), so that a model learns to keep what is zero in both neighbours zero.

Binning averages blocks of pixels (integer factors) or, for 1.5x, smooths with a Gaussian of the
antialiasing width and resamples linearly (:func:`scipy.ndimage.zoom`): the way a coarser detector
pixel integrates the signal. Held out, never written here: the FIB-SEM validation block, ``cube2``
and ISBI z 24..29 (the regions ``benchmarks/bench_quality.py`` scores).

Example:
    python recipes/train_zoo.py --out /work/zoo_data          # writes the TIFFs, prints commands
    python recipes/train_zoo.py --out /work/zoo_data --entry dan-em --print-only
"""

import argparse
import pathlib
import shlex

import numpy as np
import tifffile
from scipy import ndimage

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"

# Each entry: the architecture and the constructor overrides of its compact configuration, then
# the training stages (each continues from the previous stage's run folder). Stage 1 trains from
# random weights with L2 on gaps 1, 2, 4 (every recursion level of x2, x4 and x8).
ENTRIES = {
    "dan-em": {
        "architecture": "dan",
        "set": {"rdn_blocks": 4, "rdn_layers": 4, "rdn_growth": 16, "features": 32,
                "blend_width": 32, "outer_partition": 4, "inner_partition": 4},
        "stages": [{"steps": 3000, "learning_rate": 2e-4, "crop": 64, "batch": 8}],
    },
    "ssan-em": {
        "architecture": "ssan",
        "set": {"rdn_blocks": 4, "rdn_layers": 4, "rdn_growth": 16, "features": 32,
                "hybrid_width": 32, "outer_partition": 4, "inner_partition": 4},
        "stages": [{"steps": 3000, "learning_rate": 2e-4, "crop": 64, "batch": 8}],
    },
    "tsain-em": {
        "architecture": "tsain",
        "set": {"filters": 32, "extraction_blocks": 2, "reconstruction_blocks": 4,
                "deformable_groups": 4, "spatial_adaptive_blocks": 1, "refinement_blocks": 1,
                "residual": "true"},
        # XLA: the deformable convolution's training step is 2.5x faster with it on this CPU.
        "stages": [{"steps": 3000, "learning_rate": 2e-4, "crop": 64, "batch": 8, "xla": True}],
    },
}


def write(path, array, z_nm, xy_nm):
    """A (Z, Y, X) uint8 ImageJ TIFF with its voxel size (written in micrometres)."""
    tifffile.imwrite(path, np.ascontiguousarray(array), imagej=True,
                     resolution=(1000.0 / xy_nm, 1000.0 / xy_nm),
                     metadata={"spacing": z_nm / 1000.0, "unit": "um", "axes": "ZYX"})


def bin_yx(volume, factor):
    """``volume`` (Z, Y, X) binned by ``factor`` in (y, x), kept as uint8."""
    if float(factor).is_integer():
        f = int(factor)
        z, y, x = volume.shape
        blocks = volume[:, :y - y % f, :x - x % f].reshape(z, y // f, f, x // f, f)
        return np.rint(blocks.mean(axis=(2, 4))).astype(np.uint8)
    sigma = (0.0, 0.5 * factor, 0.5 * factor)  # antialiasing before resampling
    smooth = ndimage.gaussian_filter(volume.astype(np.float32), sigma)
    small = ndimage.zoom(smooth, (1.0, 1.0 / factor, 1.0 / factor), order=1)
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


def bin_zyx(volume, factor):
    """``volume`` binned by the integer ``factor`` along all three axes."""
    z, y, x = (s - s % factor for s in volume.shape)
    blocks = volume[:z, :y, :x].reshape(z // factor, factor, y // factor, factor, x // factor, factor)
    return np.rint(blocks.mean(axis=(1, 3, 5))).astype(np.uint8)


def with_margins(volume, left=40, top=24):
    """A copy of ``volume`` with black margins, zero in every slice, as alignment leaves them."""
    out = volume.copy()
    out[:, :, :left] = 0
    out[:, :top, :] = 0
    return out


def training_files():
    """{file name: (array, z spacing nm, pixel nm)} of every training volume (held-out regions excluded)."""
    fibsem = tifffile.imread(DATA / "flyem_medulla_fibsem_10nm" / "volume.tif")[:78]
    cube1 = tifffile.imread(DATA / "flyem_medulla_training_cubes" / "cube1.tif")
    isbi = tifffile.imread(DATA / "isbi2012_sstem" / "volume.tif")[:24]
    files = {"fib_z.tif": (fibsem, 10, 10),
             "cube1_z.tif": (cube1, 10, 10),
             "cube1_y.tif": (cube1.transpose(1, 0, 2), 10, 10),
             "cube1_x.tif": (cube1.transpose(2, 0, 1), 10, 10),
             "isbi_z.tif": (isbi, 50, 4),
             "fib_z_margins.tif": (with_margins(fibsem), 10, 10)}
    for factor, tag in ((1.5, "b15"), (2, "b2"), (3, "b3")):
        files[f"fib_z_{tag}.tif"] = (bin_yx(fibsem, factor), 10, 10 * factor)
        files[f"cube1_z_{tag}.tif"] = (bin_yx(cube1, factor), 10, 10 * factor)
        files[f"cube1_y_{tag}.tif"] = (bin_yx(cube1.transpose(1, 0, 2), factor), 10, 10 * factor)
    files["cube1_z_b2iso.tif"] = (bin_zyx(cube1, 2), 20, 20)
    return files


def commands(entry, out, names):
    """The shell commands that train ``entry`` on the files ``names`` in ``out``, stage by stage."""
    spec = ENTRIES[entry]
    data = ",".join(str(out / name) for name in names)
    lines = []
    previous = None
    for index, stage in enumerate(spec["stages"], start=1):
        run = f"runs/{entry}-stage{index}"
        source = spec["architecture"] if previous is None else f"{previous}/latest"
        args = ["emzoo", "train", source, "--data", data, "--steps", str(stage["steps"]),
                "--batch-size", str(stage["batch"]), "--crop", str(stage["crop"]), "--gaps", "1,2,4",
                "--loss", "l2", "--learning-rate", str(stage["learning_rate"]),
                "--val-fraction", "0.05", "--checkpoint-every", "250", "--seed", str(index),
                "--output", run]
        if stage.get("xla"):
            args += ["--jit-compile", "true"]
        if previous is None:
            args += ["--from-scratch"] + [f"--set={key}={value}" for key, value in spec["set"].items()]
        lines.append(" ".join(shlex.quote(arg) for arg in args))
        lines.append(f"#   cut or stopped: the same command with --resume continues from {run}'s last "
                     "checkpoint")
        previous = run
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the training TIFFs")
    parser.add_argument("--entry", choices=sorted(ENTRIES), action="append",
                        help="print only these entries' commands (repeatable)")
    parser.add_argument("--print-only", action="store_true", help="write nothing, print commands")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    if args.print_only:
        names = sorted(path.name for path in out.glob("*.tif"))
    else:
        out.mkdir(parents=True, exist_ok=True)
        files = training_files()
        for name, (array, z_nm, xy_nm) in files.items():
            write(out / name, array, z_nm, xy_nm)
            print(f"# wrote {out / name}: {array.shape}, {z_nm} nm slices, {xy_nm} nm pixels")
        names = sorted(files)
    for entry in args.entry or sorted(ENTRIES):
        print(f"# {entry}")
        print("\n".join(commands(entry, out, names)))


if __name__ == "__main__":
    main()
