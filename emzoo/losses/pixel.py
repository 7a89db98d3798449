"""Pixel losses: L1 (FILM), L2 (TSAIN) and Charbonnier (SSAN, DAN), each a mean over pixels.

All three average over H, W and C per sample and then over the batch (Keras' reduction), like
FILM's ``l1`` and the TSAIN code's ``MSELoss``. The SSAN paper writes the Charbonnier loss as a sum
over pixels; the mean is used so that its weight of 1 keeps the paper's 1 : 1 balance with the
feature loss (normalised by C*H*W) at any crop size.

Example:
    >>> import numpy as np
    >>> from emzoo.losses.pixel import CharbonnierLoss
    >>> loss = CharbonnierLoss()                    # sqrt(d^2 + eps^2), eps = 1e-6
    >>> round(float(loss(np.zeros((1, 2, 2, 1)), np.full((1, 2, 2, 1), 0.3))), 6)
    0.3
"""

import keras
from keras import ops

from emzoo.losses.core import TermLoss, mean_per_sample


@keras.saving.register_keras_serializable(package="emzoo")
class L1Loss(TermLoss):
    """Mean absolute error, per sample then over the batch (FILM's ``l1``)."""

    def __init__(self, name="l1", **kwargs):
        super().__init__(name=name, **kwargs)

    def per_sample(self, ctx):
        return mean_per_sample(ops.abs(ctx.images["pred"] - ctx.images["true"]))


@keras.saving.register_keras_serializable(package="emzoo")
class L2Loss(TermLoss):
    """Mean squared error (TSAIN's pixel loss, eq. 14; the authors' ``MSELoss``)."""

    def __init__(self, name="l2", **kwargs):
        super().__init__(name=name, **kwargs)

    def per_sample(self, ctx):
        return mean_per_sample(ops.square(ctx.images["pred"] - ctx.images["true"]))


@keras.saving.register_keras_serializable(package="emzoo")
class CharbonnierLoss(TermLoss):
    """Mean Charbonnier penalty ``sqrt(d^2 + eps^2)`` (SSAN eq. "pixel-wise loss", eps = 1e-6).

    Args:
        epsilon: the paper's eps (1e-6).
        square_epsilon: ``True`` (paper: ``sqrt(d^2 + eps^2)``); ``False`` gives the variant left
            commented out in the TSAIN authors' code, ``sqrt(d^2 + eps)``.
    """

    def __init__(self, epsilon=1e-6, square_epsilon=True, name="charbonnier", **kwargs):
        super().__init__(name=name, **kwargs)
        self.epsilon = float(epsilon)
        self.square_epsilon = bool(square_epsilon)

    def per_sample(self, ctx):
        offset = self.epsilon ** 2 if self.square_epsilon else self.epsilon
        diff = ctx.images["pred"] - ctx.images["true"]
        return mean_per_sample(ops.sqrt(ops.square(diff) + offset))

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon,
                "square_epsilon": self.square_epsilon}
