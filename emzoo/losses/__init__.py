"""Training losses of the four papers, and ``paper_loss(architecture, config)``, their totals.

Modules: ``pixel`` (L1, L2, Charbonnier), ``vgg`` (the one frozen VGG16/VGG19 feature extractor),
``perceptual`` (FILM's VGG19 loss, VGG16 feature reconstruction), ``style`` (Gram matrix, FILM
style, style reconstruction, SSAN's adaptive style balance), ``schedules`` (piecewise-constant
weights), ``combined`` (:class:`CombinedLoss`, the weighted sum).

Paper totals (``paper_loss``):

=========  ===================================================================================
film       FILM Style config: ``l1`` 1.0; ``film_vgg`` 1.0 -> 0.25 and ``film_style`` 0.0 -> 40.0
           after step 1.5M (film.md 3.2). ``variant="vgg"``: l1 + vgg (1.0 -> 0.25);
           ``variant="l1"``: l1 only.
tsain      ``l2 + feature + 1e6 * style`` (TSAIN eq. 13-16; pixel loss is MSE as in eq. 14)
ssan       ``1e6 * style_balance + feature + charbonnier`` (SSAN total loss, eq. 15)
dan        ``1e6 * style + feature + charbonnier`` (DAN names the pixel term L_1 without a
           formula; SSAN, by the same authors with the same symbol, defines it as Charbonnier)
other      ``l1``, with a warning
=========  ===================================================================================

How the losses get the input frames and the step inside ``fit``: an emzoo ``Interpolator``'s
``compile()`` (no arguments) uses ``paper_loss``. When the loss has ``uses_frames`` (SSAN's style
balance), ``compile`` gives Keras no loss and ``Interpolator.compute_loss`` calls
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
    >>> import emzoo.losses as losses
    >>> loss = losses.paper_loss("ssan", {}, vgg_weights=None)
    >>> loss.uses_frames, sorted(loss.terms)
    (True, ['charbonnier', 'feature', 'style_balance'])
    >>> film = losses.paper_loss("film", {}, schedule_scale=1e-4)   # switches after 150 steps
    >>> film.weights["film_style"]
    PiecewiseConstant(boundaries=[150], values=[0.0, 40.0])
"""

import warnings

from emzoo.errors import EmzooError, describe
from emzoo.losses.combined import CombinedLoss
from emzoo.losses.core import LossContext, TermLoss
from emzoo.losses.perceptual import FeatureReconstructionLoss, FILMPerceptualLoss
from emzoo.losses.pixel import CharbonnierLoss, L1Loss, L2Loss
from emzoo.losses.schedules import FILM_STYLE_BOUNDARY, PiecewiseConstant
from emzoo.losses.style import (FILMStyleLoss, StyleBalanceLoss, StyleReconstructionLoss,
                                gram_matrix)
from emzoo.losses.vgg import VGGFeatureExtractor, set_default_weights

EM_STYLE_WEIGHT = 1e6
FILM_VARIANTS = ("style", "vgg", "l1")


def film_loss(variant="style", vgg_weights="default", schedule_scale=1.0):
    """FILM's training loss of the ``style``, ``vgg`` or ``l1`` configuration (film.md 3.2).

    Example:
        >>> sorted(film_loss("vgg").terms)
        ['film_vgg', 'l1']
    """
    if variant not in FILM_VARIANTS:
        raise EmzooError(describe("Invalid value for argument `variant`.",
                                  " or ".join(map(repr, FILM_VARIANTS)), variant=variant))
    terms = {"l1": L1Loss()}
    weights = {"l1": 1.0}
    if variant in ("vgg", "style"):
        terms["film_vgg"] = FILMPerceptualLoss(vgg_weights=vgg_weights)
        weights["film_vgg"] = PiecewiseConstant([FILM_STYLE_BOUNDARY], [1.0, 0.25])
    if variant == "style":
        terms["film_style"] = FILMStyleLoss(vgg_weights=vgg_weights)
        weights["film_style"] = PiecewiseConstant([FILM_STYLE_BOUNDARY], [0.0, 40.0])
    weights = {k: (w.scaled(schedule_scale) if isinstance(w, PiecewiseConstant) else w)
               for k, w in weights.items()}
    return CombinedLoss(terms, weights, name=f"film_{variant}_loss")


def paper_loss(architecture, config=None, vgg_weights="default", schedule_scale=1.0, variant=None):
    """The total training loss of ``architecture``'s paper (table in the module docstring).

    Args:
        architecture: ``"film"``, ``"tsain"``, ``"ssan"`` or ``"dan"`` (others: L1 + warning).
        config: the model's ``get_config()`` (unused by the current papers; kept for variants).
        vgg_weights: ``"default"``, ``"imagenet"``, ``"matconvnet"`` (FILM's original file), a
            path, or ``None`` (random, for tests).
        schedule_scale: multiplies every schedule boundary (FILM's 1.5M steps) for short runs.
        variant: FILM only: ``"style"`` (default), ``"vgg"`` or ``"l1"``.
    """
    del config
    if architecture == "film":
        return film_loss(variant or "style", vgg_weights, schedule_scale)
    if architecture == "tsain":
        terms = {"l2": L2Loss(), "feature": FeatureReconstructionLoss(vgg_weights=vgg_weights),
                 "style": StyleReconstructionLoss(vgg_weights=vgg_weights)}
        return CombinedLoss(terms, {"style": EM_STYLE_WEIGHT}, name="tsain_loss")
    if architecture == "ssan":
        terms = {"style_balance": StyleBalanceLoss(vgg_weights=vgg_weights),
                 "feature": FeatureReconstructionLoss(vgg_weights=vgg_weights),
                 "charbonnier": CharbonnierLoss()}
        return CombinedLoss(terms, {"style_balance": EM_STYLE_WEIGHT}, name="ssan_loss")
    if architecture == "dan":
        terms = {"style": StyleReconstructionLoss(vgg_weights=vgg_weights),
                 "feature": FeatureReconstructionLoss(vgg_weights=vgg_weights),
                 "charbonnier": CharbonnierLoss()}
        return CombinedLoss(terms, {"style": EM_STYLE_WEIGHT}, name="dan_loss")
    warnings.warn(f"No paper loss is defined for architecture {architecture!r}; using L1.",
                  stacklevel=2)
    return L1Loss()


__all__ = ["CharbonnierLoss", "CombinedLoss", "FILMPerceptualLoss", "FILMStyleLoss",
           "FeatureReconstructionLoss", "L1Loss", "L2Loss", "LossContext", "PiecewiseConstant",
           "StyleBalanceLoss", "StyleReconstructionLoss", "TermLoss", "VGGFeatureExtractor",
           "film_loss", "gram_matrix", "paper_loss", "set_default_weights"]
