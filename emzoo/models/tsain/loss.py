"""TSAIN's training loss: ``l2 + feature + 1e6 * style`` (TSAIN eqs. 13-16).

The pixel term is the MSE (eq. 14); ``feature`` is the VGG16 feature reconstruction and ``style``
the style reconstruction on VGG16 Gram matrices, both from :mod:`emzoo.losses`.

Example:
    >>> from emzoo.models.tsain.loss import paper_loss
    >>> sorted(paper_loss(vgg_weights=None).terms)
    ['feature', 'l2', 'style']
"""

from emzoo.losses import (EM_STYLE_WEIGHT, CombinedLoss, FeatureReconstructionLoss, L2Loss,
                          StyleReconstructionLoss)


def paper_loss(vgg_weights="default"):
    """TSAIN's total loss; ``vgg_weights`` as in :mod:`emzoo.losses.vgg` (``None``: random)."""
    terms = {"l2": L2Loss(), "feature": FeatureReconstructionLoss(vgg_weights=vgg_weights),
             "style": StyleReconstructionLoss(vgg_weights=vgg_weights)}
    return CombinedLoss(terms, {"style": EM_STYLE_WEIGHT}, name="tsain_loss")
