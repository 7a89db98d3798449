"""Damage benchmark: synthetic section defects on held-out EM, found by `find_damage` and repaired
by `repair_masked`.

Each region is damaged the way sections are damaged: whole slices (blank, duplicated) and partial
defects covering 5-40 % of a slice (dark fold band, black tear line, bright or dark blob, noise
patch, local shift). Damaged slices are at least 3 apart and never the first or last. Reported:

* detection recall per kind (a whole-slice defect is found when its slice has a whole-slice
  finding; a partial one when the slice's mask overlaps the true region with IoU >= 0.5) and
  false positives per 100 clean slices (findings on undamaged slices);
* mask IoU of partial defects (the slice's detected mask against the true region);
* PSNR inside the damaged pixels (against the undamaged original) for the repair with the
  bundled ``default`` model (true mask and detected mask; feathered, and with ``--blend
  poisson`` the gradient-domain blend), linear (mean of the two neighbours, true mask) and the
  optical-flow baseline (true mask; skipped without OpenCV);
* the seam each leaves at the edge of a partial defect: the mean gradient magnitude of the error
  (output minus the undamaged original) within 2 pixels of the mask's edge, on both sides, in
  grey levels per pixel (a step between repair and intact tissue shows there).

Never run in CI. Example:
    nice -n 5 python benchmarks/bench_repair.py --regions fibsem-val cube2 isbi-val
A quick look (detection only):
    python benchmarks/bench_repair.py --regions fibsem-val --no-repair
"""

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
# name: (path, z range damaged (first, end exclusive): held out from the default's training).
# Detection sees the whole stack (it learns nothing, and a real stack is longer than a held-out
# block); only slices of the range are damaged and scored for repair.
REGIONS = {
    "fibsem-val": (DATA / "flyem_medulla_fibsem_10nm" / "volume.tif", (78, 97)),
    "cube2": (DATA / "flyem_medulla_training_cubes" / "cube2.tif", (100, 160)),
    "isbi-val": (DATA / "isbi2012_sstem" / "volume.tif", (24, 30)),
}
WHOLE = ("blank", "duplicate")
PARTIAL = ("fold", "tear", "blob", "noise", "shift")
DEFECTS = WHOLE + PARTIAL


# ------------------------------------------------------------------------------ defects
def _band(shape, rng, fraction, jagged=0.0):
    """A straight band across the slice (random angle and offset) covering about ``fraction``."""
    height, width = shape
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    distance = (yy - height / 2) * np.cos(angle) + (xx - width / 2) * np.sin(angle)
    distance -= rng.uniform(-0.25, 0.25) * min(height, width)
    if jagged:
        along = (yy * np.sin(angle) - xx * np.cos(angle))
        distance += jagged * np.sin(along / rng.uniform(6, 14) + rng.uniform(0, 6))
    # width so that the band covers the fraction (bisect on the threshold)
    lo, hi = 0.0, float(max(height, width))
    for _ in range(30):
        half = (lo + hi) / 2
        if (np.abs(distance) < half).mean() < fraction:
            lo = half
        else:
            hi = half
    return np.abs(distance) < hi


def _ellipse(shape, rng, fraction):
    height, width = shape
    area = fraction * height * width
    ratio = rng.uniform(0.6, 1.6)
    ry, rx = np.sqrt(area / np.pi * ratio), np.sqrt(area / np.pi / ratio)
    cy = rng.uniform(ry, max(ry + 1, height - ry))
    cx = rng.uniform(rx, max(rx + 1, width - rx))
    yy, xx = np.mgrid[:height, :width]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1.0


def damage(volume, z, kind, rng, fraction=None):
    """Damages slice ``z`` of ``volume`` (uint8, in place); returns the true mask (bool (Y, X))."""
    plane = volume[z].astype(np.float32) / 255.0
    shape = plane.shape
    if fraction is None:
        fraction = rng.uniform(0.05, 0.40)
    if kind == "blank":
        volume[z] = rng.choice([0, 255, int(volume[z].mean())])
        return np.ones(shape, bool)
    if kind == "duplicate":
        volume[z] = volume[z - 1]
        return np.ones(shape, bool)
    if kind == "fold":
        region = _band(shape, rng, fraction, jagged=3.0)
        soft = ndimage.gaussian_filter(region.astype(np.float32), 1.5)
        plane = plane * (1 - soft * rng.uniform(0.55, 0.8))
        region = soft > 0.02
    elif kind == "tear":
        region = _band(shape, rng, min(fraction, 0.12), jagged=4.0)
        plane = np.where(region, rng.uniform(0.0, 0.06), plane)
    elif kind == "blob":
        region = _ellipse(shape, rng, fraction)
        soft = ndimage.gaussian_filter(region.astype(np.float32), 3.0)
        sign = rng.choice([-1.0, 1.0])
        plane = plane + sign * soft * rng.uniform(0.3, 0.5)
        region = soft > 0.02
    elif kind == "noise":
        region = _ellipse(shape, rng, fraction)
        plane = np.where(region, plane + rng.normal(0, rng.uniform(0.15, 0.25), shape), plane)
    elif kind == "shift":
        region = _ellipse(shape, rng, fraction)
        dy, dx = rng.integers(6, 16, size=2) * rng.choice([-1, 1], size=2)
        shifted = np.roll(plane, (int(dy), int(dx)), axis=(0, 1))
        plane = np.where(region, shifted, plane)
    else:
        raise ValueError(kind)
    damaged = np.clip(np.rint(plane * 255.0), 0, 255).astype(np.uint8)
    region &= damaged != volume[z]  # only pixels that changed count as damaged
    volume[z] = damaged
    return region


def damage_plan(depth, first, end, trial, kinds):
    """``{z: kind}``: damaged slices of [first, end) at least 3 apart, never the first or last of
    the stack, kinds in turn (each trial starts one kind further)."""
    start = max(first, 1) + trial % 3
    slices = list(range(start, min(end, depth - 1), 3))
    return {z: kinds[(i + trial) % len(kinds)] for i, z in enumerate(slices)}


# ----------------------------------------------------------------------------- scoring
def psnr(a, b):
    error = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if error == 0 else 10 * np.log10(255.0 ** 2 / error)


def iou(a, b):
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def load_region(name):
    import tifffile

    return np.asarray(tifffile.imread(REGIONS[name][0]))


def run_region(name, trials, repair, model, stats, rng):
    from emzoo.engine import damage as engine_damage
    WHOLE_SLICE_KINDS, find_damage = engine_damage.WHOLE_SLICE_KINDS, engine_damage.find_damage
    repair_masked = getattr(engine_damage, "repair_masked", None)

    clean = load_region(name)
    depth = clean.shape[0]
    # a clean stack: findings are all false positives
    report = find_damage(clean)
    stats["clean_fp"] += len(report.damaged_slices)
    stats["clean_slices"] += depth
    kinds = DEFECTS
    for trial in range(trials):
        plan = damage_plan(depth, *REGIONS[name][1], trial, kinds)
        volume = clean.copy()
        truth = {z: damage(volume, z, kind, rng) for z, kind in plan.items()}
        report = find_damage(volume)
        found = {}
        for f in report.findings:
            found.setdefault(f["slice"], []).append(f["kind"])
        stats["slices"] += depth - len(plan)
        stats["fp"] += len([z for z in found if z not in plan])
        for z, kind in plan.items():
            row = stats["kinds"].setdefault(kind, {"n": 0, "found": 0, "ious": [], "psnr": {}})
            row["n"] += 1
            if kind in WHOLE:
                row["found"] += any(k in WHOLE_SLICE_KINDS for k in found.get(z, []))
            else:
                overlap = iou(report.mask[z] > 0, truth[z])
                row["ious"].append(overlap)
                row["found"] += overlap >= 0.5
        if repair:
            true_mask = np.zeros(volume.shape, np.uint8)
            for z, region in truth.items():
                true_mask[z] = region
            outputs = {"linear": _linear(volume, true_mask)}
            outputs["default"] = repair_masked(volume, true_mask, model, progress=False)["array"]
            outputs["default (poisson)"] = repair_masked(volume, true_mask, model, blend="poisson",
                                                         progress=False)["array"]
            outputs["default (detected mask)"] = repair_masked(
                volume, report.mask, model, progress=False)["array"]
            if _has_cv2():
                outputs["flow"] = repair_masked(volume, true_mask, "flow", progress=False)["array"]
            for z, kind in plan.items():
                row = stats["kinds"][kind]
                for method, out in outputs.items():
                    row["psnr"].setdefault(method, []).append(
                        psnr(out[z][truth[z]], clean[z][truth[z]]))
                row["psnr"].setdefault("damaged input", []).append(
                    psnr(volume[z][truth[z]], clean[z][truth[z]]))
                if kind in PARTIAL:
                    for method, out in outputs.items():
                        row.setdefault("seam", {}).setdefault(method, []).append(
                            seam_error(out[z], clean[z], truth[z]))
            for z in truth:  # past the blend band (4 pixels, Euclidean), nothing may change
                far = ndimage.distance_transform_edt(true_mask[z] == 0) > 4
                changed = outputs["default"][z][far] != volume[z][far]
                stats["outside_changed"] += int(changed.sum())
            untouched = [z for z in range(depth) if z not in truth]
            stats["outside_changed"] += int(
                (outputs["default"][untouched] != volume[untouched]).sum())


def seam_error(out, clean, mask, width=2):
    """Mean gradient magnitude of ``out - clean`` within ``width`` pixels of ``mask``'s edge."""
    edge = ndimage.binary_dilation(mask, iterations=width) & ~ndimage.binary_erosion(
        mask, iterations=width)
    gy, gx = np.gradient(out.astype(np.float64) - clean)
    return float(np.hypot(gy, gx)[edge].mean())


def _linear(volume, mask):
    """Mean of the two neighbours inside the mask (the linear baseline)."""
    out = volume.copy()
    for z in np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1)):
        mean = (volume[z - 1].astype(np.float32) + volume[z + 1]) / 2
        out[z] = np.where(mask[z] > 0, np.rint(mean), volume[z]).astype(volume.dtype)
    return out


def _has_cv2():
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def seam_table(all_stats):
    methods = ["linear", "flow", "default", "default (poisson)"]
    lines = ["| region | defect | " + " | ".join(f"seam {m}" for m in methods) + " |",
             "|" + "---|" * (2 + len(methods))]
    for name, stats in all_stats.items():
        for kind in PARTIAL:
            seams = stats["kinds"].get(kind, {}).get("seam")
            if seams:
                lines.append(f"| {name} | {kind} | " + " | ".join(
                    f"{np.mean(seams[m]):.2f}" if m in seams else "-" for m in methods) + " |")
    return "\n".join(lines)


def table(all_stats):
    methods = ["damaged input", "linear", "flow", "default", "default (poisson)",
               "default (detected mask)"]
    lines = ["| region | defect | n | recall | mean IoU | " + " | ".join(
        f"PSNR {m}" for m in methods) + " |", "|" + "---|" * (5 + len(methods))]
    for name, stats in all_stats.items():
        for kind in DEFECTS:
            row = stats["kinds"].get(kind)
            if not row:
                continue
            mean_iou = f"{np.mean(row['ious']):.2f}" if row["ious"] else "-"
            cells = [f"{np.mean(row['psnr'][m]):.2f}" if m in row["psnr"] else "-"
                     for m in methods]
            lines.append(f"| {name} | {kind} | {row['n']} | {row['found'] / row['n']:.2f} | "
                         f"{mean_iou} | " + " | ".join(cells) + " |")
        fp = 100 * stats["fp"] / max(stats["slices"], 1)
        clean = 100 * stats["clean_fp"] / max(stats["clean_slices"], 1)
        lines.append(f"| {name} | false positives / 100 clean slices | {stats['slices']} | "
                     f"{fp:.2f} (undamaged stack: {clean:.2f}) | | " + " | " * len(methods))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", nargs="+", default=["fibsem-val", "cube2", "isbi-val"],
                        choices=sorted(REGIONS))
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--model", default="default")
    parser.add_argument("--no-repair", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the raw numbers here")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    model = None
    if not args.no_repair:
        from emzoo.engine.interpolators import resolve_model

        model = resolve_model(args.model)
    all_stats = {}
    for name in args.regions:
        start = time.time()
        stats = {"kinds": {}, "fp": 0, "slices": 0, "clean_fp": 0, "clean_slices": 0,
                 "outside_changed": 0}
        run_region(name, args.trials, not args.no_repair, model, stats, rng)
        all_stats[name] = stats
        print(f"{name}: {time.time() - start:.0f} s", file=sys.stderr)
    print(table(all_stats))
    if not args.no_repair:
        print()
        print(seam_table(all_stats))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(all_stats, handle, indent=1, default=float)


if __name__ == "__main__":
    main()
