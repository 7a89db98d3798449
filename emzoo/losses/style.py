"""Style losses on Gram matrices of VGG features: FILM's, the style reconstruction, SSAN's balance.

Gram matrices (:func:`emzoo.losses.gram.gram_matrix`): ``N = c*h*w`` normalisation for
SSAN/TSAIN/DAN (``"chw"``), ``N = h*w`` for FILM (``"hw"``).

**FILM style** (film.md 3.1, ``vgg19_loss.py``): the FILM VGG19 features of the five layers, each
divided by 255, ``"hw"`` Grams; ``L = sum_l w_l mean((G_l(y) - G_l(y_hat))^2)`` with FILM's layer
weights; no final /255.

**Style reconstruction** (TSAIN eq. 16, DAN ``L_s``, SSAN ``L_style``): VGG16 ``relu1_2, relu2_2,
relu3_3, relu4_3`` (as the feature loss), ``"chw"`` Grams,
``L = sum_j mean((G_j(y_hat) - G_j(y))^2)``. The mean over the ``c x c`` entries is what the
authors' code does (TSADR ``CNNLoss``: ``MSELoss`` on Grams) and what their weight of 1e6 was
tuned with; ``gram_reduction="sum"`` gives the SSAN paper's literal squared Frobenius norm
(``c^2`` times larger).

**Adaptive style balance** (SSAN eq. 15). Frames ``j = 0, 1, 2`` are the input ``x0``, the ground
truth (frame 1) and the input ``x1``; ``L_style(a, b)`` is the style reconstruction above:

    L_bs = sum_j beta_j * sign(L_style(y_hat, I_j) - L_style(y, I_j)) * L_style(y_hat, I_j),
    beta = (0.1, 1, 0.1)

The sign is a constant for the gradient (``stop_gradient``): with ``+1`` the prediction's style is
pulled towards frame ``j``, with ``-1`` pushed away, so it settles where it is as far from ``x0``
and ``x1`` in style as the ground truth is. For ``j = 1``, ``L_style(y, y) = 0`` and the term is
``beta_1 * L_style(y_hat, y)``, the plain style loss. Signs are taken per sample.

Example:
    >>> import numpy as np
    >>> from emzoo.losses.style import StyleReconstructionLoss
    >>> loss = StyleReconstructionLoss(vgg_weights=None)            # random VGG16 (tests)
    >>> value = loss(np.zeros((1, 32, 32, 1)), np.ones((1, 32, 32, 1)))
"""

import keras
from keras import ops

from emzoo.errors import EmzooError, describe
from emzoo.losses.perceptual import FILMVGGTermLoss, VGGTermLoss

# TSAIN, SSAN and DAN all weight their style term by 1e6 (the papers and the authors' code).
EM_STYLE_WEIGHT = 1e6
SSAN_STYLE_BALANCE_BETAS = (0.1, 1.0, 0.1)
GRAM_REDUCTIONS = ("mean", "sum")


def _gram_distance(gram_a, gram_b, reduction):
    diff = ops.square(gram_a - gram_b)
    flat = ops.reshape(diff, (ops.shape(diff)[0], -1))
    return ops.mean(flat, axis=1) if reduction == "mean" else ops.sum(flat, axis=1)


def style_distance(grams_a, grams_b, layers, layer_weights=None, reduction="mean"):
    """``sum_l w_l * reduce((G_l(a) - G_l(b))^2)`` per sample -> ``(B,)`` (w = 1 when None)."""
    if reduction not in GRAM_REDUCTIONS:
        raise EmzooError(describe("Invalid value for argument `gram_reduction`.", "'mean' or 'sum'",
                                  gram_reduction=reduction))
    weights = layer_weights if layer_weights is not None else [1.0] * len(layers)
    total = 0.0
    for layer, weight in zip(layers, weights):
        total = total + weight * _gram_distance(grams_a[layer], grams_b[layer], reduction)
    return total


def style_balance_distance(grams_pred, grams_true, grams_x0, grams_x1, layers,
                           betas=SSAN_STYLE_BALANCE_BETAS, reduction="mean"):
    """SSAN eq. 15 per sample -> ``(B,)``; the signs are constants for the gradient."""
    total = 0.0
    for beta, grams_frame in zip(betas, (grams_x0, grams_true, grams_x1)):
        pred_to_frame = style_distance(grams_pred, grams_frame, layers, reduction=reduction)
        true_to_frame = style_distance(grams_true, grams_frame, layers, reduction=reduction)
        sign = ops.stop_gradient(ops.sign(pred_to_frame - true_to_frame))
        total = total + beta * sign * pred_to_frame
    return total


@keras.saving.register_keras_serializable(package="emzoo")
class FILMStyleLoss(FILMVGGTermLoss):
    """FILM's style (Gram) loss on the FILM VGG19 features (see the module docstring)."""

    def __init__(self, name="film_style", **kwargs):
        super().__init__(name=name, **kwargs)

    def per_sample(self, ctx):
        grams = {role: ctx.grams(self.extractor, role, "hw", feature_scale=1.0 / 255.0)
                 for role in ("true", "pred")}
        return style_distance(grams["true"], grams["pred"], self.vgg_layers, self.layer_weights)


class EMStyleTermLoss(VGGTermLoss):
    """Base of the VGG16 Gram losses of TSAIN, SSAN and DAN (``gram_reduction``: mean or sum)."""

    def __init__(self, gram_reduction="mean", **kwargs):
        super().__init__(**kwargs)
        if gram_reduction not in GRAM_REDUCTIONS:
            raise EmzooError(describe("Invalid value for argument `gram_reduction`.",
                                      "'mean' or 'sum'", gram_reduction=gram_reduction))
        self.gram_reduction = gram_reduction

    def grams(self, ctx, role):
        return ctx.grams(self.extractor, role, "chw")

    def get_config(self):
        return {**super().get_config(), "gram_reduction": self.gram_reduction}


@keras.saving.register_keras_serializable(package="emzoo")
class StyleReconstructionLoss(EMStyleTermLoss):
    """Style reconstruction loss (TSAIN eq. 16, DAN ``L_s``); multiply by 1e6 as the papers do."""

    def __init__(self, name="style", **kwargs):
        super().__init__(name=name, **kwargs)

    def per_sample(self, ctx):
        return style_distance(self.grams(ctx, "pred"), self.grams(ctx, "true"), self.vgg_layers,
                              reduction=self.gram_reduction)


@keras.saving.register_keras_serializable(package="emzoo")
class StyleBalanceLoss(EMStyleTermLoss):
    """SSAN's adaptive style-balance loss (eq. 15); needs the input frames (``uses_frames``).

    Args:
        betas: weights of frames ``(x0, ground truth, x1)``; the paper's ``(0.1, 1, 0.1)``.
    """

    uses_frames = True
    roles = ("pred", "true", "x0", "x1")

    def __init__(self, betas=SSAN_STYLE_BALANCE_BETAS, name="style_balance", **kwargs):
        super().__init__(name=name, **kwargs)
        self.betas = tuple(float(b) for b in betas)
        if len(self.betas) != 3:
            raise EmzooError(describe("Invalid value for argument `betas`.",
                                      "three weights (x0, ground truth, x1)", betas=betas))

    def per_sample(self, ctx):
        return style_balance_distance(*(self.grams(ctx, role) for role in self.roles),
                                      layers=self.vgg_layers, betas=self.betas,
                                      reduction=self.gram_reduction)

    def get_config(self):
        return {**super().get_config(), "betas": list(self.betas)}
