"""Generic loss terms that the architectures' paper losses are made of.

Modules: ``pixel`` (L1, L2, Charbonnier), ``vgg`` (the one frozen VGG16/VGG19 feature extractor),
``perceptual`` (FILM's VGG19 loss, VGG16 feature reconstruction), ``gram`` (the Gram matrix),
``style`` (FILM style, style reconstruction, SSAN's adaptive style balance), ``schedules``
(piecewise-constant weights), ``combined`` (:class:`CombinedLoss`, the weighted sum), ``core``
(what every term shares).

Each architecture composes its own paper loss from these terms in its folder
(``emzoo/models/<architecture>/loss.py``) and a model gives it with ``model.paper_loss()``; this
package knows no architecture.

How the losses get the input frames and the step inside ``fit``: an emzoo ``Interpolator``'s
``compile()`` (no arguments) uses ``model.paper_loss()``. When the loss has ``uses_frames`` (SSAN's
style balance), ``compile`` gives Keras no loss and ``Interpolator.compute_loss`` calls
``loss.call_with_frames(x, y_true, y_pred["image"])``, where ``x`` is the batch's input dict
``{"x0", "x1", "time"}`` (``call_with_frames`` returns the batch mean; ``compute_loss`` divides
the total by the replica count under ``tf.distribute``, as Keras' own losses do); other losses go
through Keras' normal ``loss(y_true, y_pred)``. When the loss has ``uses_step`` (FILM's
schedules), ``compile`` calls ``loss.bind_step(optimizer.iterations)``, and each weight is read
from that counter inside the compiled train step.

VGG weights: ``vgg_weights="default"`` means ImageNet (the Keras Applications file, downloaded
once into the emzoo cache, read at the first training step only), unless ``EMZOO_VGG_WEIGHTS``
(``random``, ``imagenet``, ``matconvnet`` or a path) or ``emzoo.losses.vgg.set_default_weights``
says otherwise; tests set ``EMZOO_VGG_WEIGHTS=random``.

Example:
    >>> from emzoo import losses
    >>> loss = losses.CombinedLoss({"l1": losses.L1Loss(), "l2": losses.L2Loss()}, {"l2": 0.5})
    >>> sorted(loss.terms)
    ['l1', 'l2']
"""

from emzoo.losses.combined import CombinedLoss
from emzoo.losses.core import LossContext, TermLoss
from emzoo.losses.gram import gram_matrix
from emzoo.losses.perceptual import FeatureReconstructionLoss, FILMPerceptualLoss
from emzoo.losses.pixel import CharbonnierLoss, L1Loss, L2Loss
from emzoo.losses.schedules import FILM_STYLE_BOUNDARY, PiecewiseConstant
from emzoo.losses.style import (EM_STYLE_WEIGHT, FILMStyleLoss, StyleBalanceLoss,
                                StyleReconstructionLoss)
from emzoo.losses.vgg import VGGFeatureExtractor, set_default_weights

__all__ = ["CharbonnierLoss", "CombinedLoss", "EM_STYLE_WEIGHT", "FILMPerceptualLoss",
           "FILMStyleLoss", "FILM_STYLE_BOUNDARY", "FeatureReconstructionLoss", "L1Loss", "L2Loss",
           "LossContext", "PiecewiseConstant", "StyleBalanceLoss", "StyleReconstructionLoss",
           "TermLoss", "VGGFeatureExtractor", "gram_matrix", "set_default_weights"]
