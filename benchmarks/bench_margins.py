"""Black alignment margins: what upscaling does to a margin and to the tissue beside it.

A held-out FIB-SEM region is upscaled twice with the protocol of ``emzoo evaluate`` (keep every
F-th slice): as it is, and with a black margin of ``--margin`` pixels (x < margin set to 0 in every
slice, as registration leaves it). Printed per model: the largest grey level invented inside the
margin, and how far the tissue beside the margin (x >= margin) moved from the run without one,
as the mean and largest absolute difference (grey levels) in bands of distance from the margin's
edge. Issue 25's target: margin at most 1 grey level, tissue within 1 grey level. Beside them,
whether the tissue next to the margin is as good as without it: PSNR against the true dropped
slices in the tissue band ``--near`` pixels wide next to the margin, without and with it.

Each model also runs with the engine's margin handling switched off (``keep_flat_regions`` and
``fill_margins`` replaced by pass-throughs), so the table shows what each part buys.

Never run in CI. Example (a few minutes on a 2-core CPU):
    python benchmarks/bench_margins.py --model default dan-em flow --factor 4
"""

import argparse
import os
import sys
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_quality import kept_slices, region_volume  # noqa: E402

BANDS = ((0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, None))  # pixels from the margin's edge


def band_psnr(new, truth):
    """PSNR (dB, 8-bit range) of the new slices against the true ones, over all their pixels."""
    error = np.mean((new - truth) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(error, 1e-12))


def upscaled(kept, model, factor, handling):
    """The new slices (every slice that is not a kept one) of ``kept`` upscaled by ``factor``."""
    from emzoo.engine import midpoint, upscale_volume

    patches = [] if handling else [
        mock.patch.object(midpoint, "keep_flat_regions", lambda x0, x1, mid, **_: mid),
        mock.patch.object(midpoint, "fill_margins", lambda image, **_: image)]
    for patch in patches:
        patch.start()
    try:
        out = upscale_volume(kept, model, factor=factor, progress=False)["array"]
    finally:
        for patch in patches:
            patch.stop()
    new = [z for z in range(out.shape[0]) if z % factor]
    return out[new].astype(np.float64)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["default", "dan-em", "flow"])
    parser.add_argument("--region", default="fibsem-val")
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--margin", type=int, default=40)
    parser.add_argument("--slices", type=int, default=17, help="input slices of the region used")
    parser.add_argument("--size", type=int, default=256, help="side of the y,x crop used")
    parser.add_argument("--near", type=int, default=16,
                        help="width (pixels) of the tissue band scored against the truth")
    args = parser.parse_args()

    volume, _ = region_volume(args.region)
    kept = kept_slices(volume, args.factor)[:args.slices, :args.size, :args.size]
    depth = (kept.shape[0] - 1) * args.factor + 1
    near = slice(args.margin, args.margin + args.near)
    truth = np.stack([volume.read(z)[:args.size, near] for z in range(depth) if z % args.factor])
    truth = truth.astype(np.float64)
    margined = kept.copy()
    margined[:, :, :args.margin] = 0
    print(f"{args.region}: {kept.shape} kept slices ({kept.dtype}), x{args.factor}, "
          f"{args.margin}-pixel black margin at x < {args.margin}")
    header = ["model", "margin handling", "margin max"] + [
        f"tissue {a}-{b if b else 'end'} px: mean / max" for a, b in BANDS] + [
        f"PSNR 0-{args.near} px: no margin / margin"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in args.model:
        for handling in (True, False):
            plain = upscaled(kept, name, args.factor, handling)
            with_margin = upscaled(margined, name, args.factor, handling)
            margin_max = float(with_margin[:, :, :args.margin].max())
            diff = np.abs(with_margin - plain)[:, :, args.margin:]
            cells = []
            for a, b in BANDS:
                band = diff[:, :, a:b]
                cells.append(f"{band.mean():.2f} / {band.max():.0f}" if band.size else "-")
            cells.append(f"{band_psnr(plain[:, :, near], truth):.2f} / "
                         f"{band_psnr(with_margin[:, :, near], truth):.2f}")
            print(f"| {name} | {'on' if handling else 'off'} | {margin_max:.0f} | "
                  + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
