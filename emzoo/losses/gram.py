"""The Gram matrix of feature maps, the statistic every style loss compares.

Features ``F`` ``(B, h, w, c)`` are reshaped to ``(B, h*w, c)`` and ``G = F^T F / N`` with
``N = c*h*w`` (SSAN/TSAIN/DAN, ``normalisation="chw"``) or ``N = h*w`` (FILM, ``"hw"``).
This module imports nothing else of ``emzoo.losses``, so :mod:`emzoo.losses.core` (which caches
Grams per evaluation) and :mod:`emzoo.losses.style` both import it without a cycle.
"""

from keras import ops

from emzoo.errors import EmzooError, describe

GRAM_NORMALISATIONS = ("chw", "hw")


def gram_matrix(features, normalisation="chw"):
    """``F^T F / N`` per sample: ``(B, h, w, c) -> (B, c, c)``; ``N = c*h*w`` or ``h*w``.

    Example:
        >>> import numpy as np
        >>> f = np.arange(8, dtype="float32").reshape(1, 2, 2, 2)
        >>> np.asarray(gram_matrix(f, "hw"))[0]          # sum_p f_p f_p^T / 4
        array([[14., 17.],
               [17., 21.]], dtype=float32)
    """
    if normalisation not in GRAM_NORMALISATIONS:
        raise EmzooError(describe("Invalid value for argument `normalisation`.", "'chw' or 'hw'",
                                  normalisation=normalisation))
    shape = ops.shape(features)
    channels = features.shape[-1]
    flat = ops.reshape(features, (shape[0], -1, channels))
    gram = ops.matmul(ops.transpose(flat, (0, 2, 1)), flat)
    count = ops.cast(shape[1], gram.dtype) * ops.cast(shape[2], gram.dtype)
    if normalisation == "chw":
        count = count * float(channels)
    return gram / count
