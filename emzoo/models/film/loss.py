"""FILM's training losses: the ``style``, ``vgg`` and ``l1`` configurations of the paper.

=========  ===================================================================================
style      ``l1`` 1.0; ``film_vgg`` 1.0 -> 0.25 and ``film_style`` 0.0 -> 40.0 after step 1.5M
vgg        ``l1`` 1.0 + ``film_vgg`` 1.0 -> 0.25 after step 1.5M
l1         ``l1`` only
=========  ===================================================================================

The terms (:class:`~emzoo.losses.FILMPerceptualLoss`, :class:`~emzoo.losses.FILMStyleLoss`) are
generic VGG19 losses in :mod:`emzoo.losses`; this module only composes them as FILM's gin
configurations do. A model's entry picks the variant with ``metadata.loss_variant``.

Example:
    >>> from emzoo.models.film.loss import paper_loss
    >>> sorted(paper_loss("vgg", vgg_weights=None).terms)
    ['film_vgg', 'l1']
    >>> paper_loss("style", vgg_weights=None, schedule_scale=1e-4).weights["film_style"]
    PiecewiseConstant(boundaries=[150], values=[0.0, 40.0])
"""

from emzoo.errors import EmzooError, describe
from emzoo.losses import (FILM_STYLE_BOUNDARY, CombinedLoss, FILMPerceptualLoss, FILMStyleLoss,
                          L1Loss, PiecewiseConstant)

VARIANTS = ("style", "vgg", "l1")


def paper_loss(variant="style", vgg_weights="default", schedule_scale=1.0):
    """FILM's training loss of the ``style``, ``vgg`` or ``l1`` configuration.

    Args:
        variant: ``"style"`` (the released Style model's), ``"vgg"`` or ``"l1"``.
        vgg_weights: ``"default"``, ``"imagenet"``, ``"matconvnet"`` (FILM's original file), a
            path, or ``None`` (random, for tests).
        schedule_scale: multiplies the 1.5M-step schedule boundary (for short runs).
    """
    if variant not in VARIANTS:
        raise EmzooError(describe("Invalid value for argument `variant`.",
                                  " or ".join(map(repr, VARIANTS)), variant=variant))
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
