"""DAN's training loss: ``1e6 * style + feature + charbonnier``.

DAN names its pixel term L_1 without a formula; SSAN, by the same authors with the same symbol,
defines it as the Charbonnier loss, which is used here.

Example:
    >>> from emzoo.models.dan.loss import paper_loss
    >>> sorted(paper_loss(vgg_weights=None).terms)
    ['charbonnier', 'feature', 'style']
"""

from emzoo.losses import (EM_STYLE_WEIGHT, CharbonnierLoss, CombinedLoss,
                          FeatureReconstructionLoss, StyleReconstructionLoss)


def paper_loss(vgg_weights="default"):
    """DAN's total loss; ``vgg_weights`` as in :mod:`emzoo.losses.vgg` (``None``: random)."""
    terms = {"style": StyleReconstructionLoss(vgg_weights=vgg_weights),
             "feature": FeatureReconstructionLoss(vgg_weights=vgg_weights),
             "charbonnier": CharbonnierLoss()}
    return CombinedLoss(terms, {"style": EM_STYLE_WEIGHT}, name="dan_loss")
