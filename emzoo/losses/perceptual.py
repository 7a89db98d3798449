"""Perceptual losses on frozen VGG features: FILM's VGG19 loss and the VGG16 feature reconstruction.

**FILM** (film.md 3.1, ``vgg19_loss.py``): VGG19 with 2x2 'SAME' *average* pooling, input
``x * 255`` minus the ImageNet mean; post-ReLU ``conv1_2, conv2_2, conv3_2, conv4_2, conv5_2``;

    L_vgg = sum_l w_l * mean |phi_l(y) - phi_l(y_hat)| / 255,   w = (1/2.6, 1/4.8, 1/3.7, 1/5.6, 10/1.5)

**TSAIN / SSAN / DAN** feature reconstruction (SSAN eq. "L_f", TSAIN eq. 15, TSADR ``CNNLoss``):
VGG16 (max pooling) ``relu1_2, relu2_2, relu3_3, relu4_3``;

    L_f = sum_j ||phi_j(y_hat) - phi_j(y)||_2^2 / (C_j H_j W_j)     (per sample, then batch mean)

fed like the authors' code fed torchvision's VGG16 (see ``vgg.py``, ``torchvision_unnormalised``).

The ``*_distance`` functions hold the formulas on given feature dicts (tested against NumPy); the
loss classes add the extractor.

Example:
    >>> import numpy as np
    >>> from emzoo.losses.perceptual import FeatureReconstructionLoss
    >>> loss = FeatureReconstructionLoss(vgg_weights=None)          # random VGG16 (tests)
    >>> value = loss(np.zeros((1, 32, 32, 1)), np.ones((1, 32, 32, 1)))
"""

import keras
from keras import ops

from emzoo.losses.core import TermLoss, mean_per_sample
from emzoo.losses.vgg import VGGFeatureExtractor

FILM_VGG_LAYERS = ("conv1_2", "conv2_2", "conv3_2", "conv4_2", "conv5_2")
FILM_LAYER_WEIGHTS = (1 / 2.6, 1 / 4.8, 1 / 3.7, 1 / 5.6, 10 / 1.5)
EM_VGG16_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")


def film_perceptual_distance(features_true, features_pred, layers=FILM_VGG_LAYERS,
                             layer_weights=FILM_LAYER_WEIGHTS):
    """FILM's VGG loss per sample from feature dicts: ``sum_l w_l mean|dphi_l| / 255`` -> ``(B,)``."""
    total = 0.0
    for layer, weight in zip(layers, layer_weights):
        total = total + weight * mean_per_sample(ops.abs(features_true[layer] - features_pred[layer]))
    return total / 255.0


def feature_reconstruction_distance(features_true, features_pred, layers=EM_VGG16_LAYERS):
    """``sum_j ||dphi_j||^2 / (C_j H_j W_j)`` per sample from feature dicts -> ``(B,)``."""
    total = 0.0
    for layer in layers:
        total = total + mean_per_sample(ops.square(features_pred[layer] - features_true[layer]))
    return total


class VGGTermLoss(TermLoss):
    """A loss on features of one shared :class:`VGGFeatureExtractor` (configured by the subclass).

    Args:
        vgg_weights: ``"default"``, ``"imagenet"``, ``"matconvnet"`` (VGG19), a path, or ``None``
            / ``"random"`` (see ``emzoo.losses.vgg``). Read lazily, on the first call.
    """

    variant = "vgg16"
    vgg_layers = EM_VGG16_LAYERS
    pooling = "max"
    default_preprocessing = "torchvision_unnormalised"
    roles = ("pred", "true")

    def __init__(self, vgg_weights="default", preprocessing=None, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.vgg_weights = None if vgg_weights is None else str(vgg_weights)
        self.preprocessing = preprocessing or self.default_preprocessing

    @property
    def extractor(self):
        return VGGFeatureExtractor.shared(self.variant, self.vgg_layers, self.pooling,
                                          self.vgg_weights, self.preprocessing)

    def feature_requests(self):
        return [(self.extractor, self.roles)]

    def get_config(self):
        return {**super().get_config(), "vgg_weights": self.vgg_weights,
                "preprocessing": self.preprocessing}


class FILMVGGTermLoss(VGGTermLoss):
    """Base of FILM's VGG19 losses: average pooling, ImageNet pre-processing, five layers."""

    variant = "vgg19"
    vgg_layers = FILM_VGG_LAYERS
    pooling = "avg"
    default_preprocessing = "imagenet"

    def __init__(self, layer_weights=FILM_LAYER_WEIGHTS, **kwargs):
        super().__init__(**kwargs)
        self.layer_weights = tuple(float(w) for w in layer_weights)

    def get_config(self):
        return {**super().get_config(), "layer_weights": list(self.layer_weights)}


@keras.saving.register_keras_serializable(package="emzoo")
class FILMPerceptualLoss(FILMVGGTermLoss):
    """FILM's VGG19 perceptual loss (film.md 3.1; see the module docstring)."""

    def __init__(self, name="film_vgg", **kwargs):
        super().__init__(name=name, **kwargs)

    def per_sample(self, ctx):
        return film_perceptual_distance(ctx.features(self.extractor, "true"),
                                        ctx.features(self.extractor, "pred"),
                                        self.vgg_layers, self.layer_weights)


@keras.saving.register_keras_serializable(package="emzoo")
class FeatureReconstructionLoss(VGGTermLoss):
    """VGG16 feature reconstruction loss (TSAIN perceptual, SSAN/DAN ``L_f``)."""

    def __init__(self, name="feature", **kwargs):
        super().__init__(name=name, **kwargs)

    def per_sample(self, ctx):
        return feature_reconstruction_distance(ctx.features(self.extractor, "true"),
                                               ctx.features(self.extractor, "pred"),
                                               self.vgg_layers)
