"""Noise floor of the quality table: how much of linear interpolation's error is slice noise that
no interpolation can predict.

A dropped slice is signal + noise. Whatever a method predicts from the kept slices, the noise of
the dropped slice itself stays in its error, so no method scores above ``-10 log10(sigma^2)`` dB
(data in [0, 1], ``sigma^2`` the per-pixel noise variance of one slice); and linear interpolation
at x2 also carries half the noise of each neighbour, ``1.5 sigma^2`` in all.

``sigma`` is estimated per slice from the finest diagonal Haar wavelet coefficients (Donoho's
median absolute deviation, ``median(|HH|) / 0.6745``), which holds for noise that is independent
from pixel to pixel; written here because it is four lines of NumPy (scikit-image's
``estimate_sigma`` does the same with PyWavelets). Structure leaks into HH as well, so this
over-estimates sigma on sharp images: the ceiling it gives is, if anything, too low.

Never run in CI. Example:
    python benchmarks/studies/noise_floor.py --regions fibsem-val cube2 isbi-val
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # bench_quality

import numpy as np  # noqa: E402

from bench_quality import REGIONS, region_volume  # noqa: E402


def haar_sigma(image):
    """Noise standard deviation of one (H, W) float slice: MAD of its finest diagonal Haar band."""
    h, w = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
    a, b = image[0:h:2, 0:w:2], image[0:h:2, 1:w:2]
    c, d = image[1:h:2, 0:w:2], image[1:h:2, 1:w:2]
    diagonal = (a - b - c + d) / 2.0
    return float(np.median(np.abs(diagonal)) / 0.6745)


def psnr(mse):
    return float(-10.0 * np.log10(mse))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", nargs="+", default=["fibsem-val", "cube2", "isbi-val"],
                        choices=sorted(REGIONS))
    parser.add_argument("--factors", type=int, nargs="+", default=[2, 4, 8])
    args = parser.parse_args()
    from emzoo.evaluate import protocol_indices

    print("| region | noise sigma (0-255) | ceiling dB | factor | linear dB | linear MSE that is noise |")
    print("|---|---|---|---|---|---|")
    for region in args.regions:
        volume, _ = region_volume(region)
        stack = np.stack([volume.read(z) for z in range(volume.shape[0])]).astype(np.float64)
        stack /= 255.0 if volume.dtype == np.uint8 else float(np.iinfo(volume.dtype).max)
        sigma2 = float(np.mean([haar_sigma(s) ** 2 for s in stack]))
        factors = [2] if region.startswith("isbi") else args.factors
        for factor in factors:
            kept, dropped = protocol_indices(0, stack.shape[0], factor)
            errors = []
            for z in dropped:
                below = max(k for k in kept if k < z)
                above = min(k for k in kept if k > z)
                w = (z - below) / (above - below)
                errors.append(np.mean(((1 - w) * stack[below] + w * stack[above] - stack[z]) ** 2))
            mse = float(np.mean(errors))
            # The dropped slice's own noise, plus its share of the neighbours' (weights w, 1 - w).
            weights = [((z - max(k for k in kept if k < z)) / factor) for z in dropped]
            noise = sigma2 * float(np.mean([1 + w ** 2 + (1 - w) ** 2 for w in weights]))
            print(f"| {region} | {np.sqrt(sigma2) * 255:.2f} | {psnr(sigma2):.2f} | x{factor} | "
                  f"{psnr(mse):.2f} | {100 * min(noise / mse, 1):.0f} % |", flush=True)


if __name__ == "__main__":
    main()
