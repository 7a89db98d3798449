"""SSAN's training loss: ``1e6 * style_balance + feature + charbonnier`` (SSAN eq. 15).

``style_balance`` is SSAN's adaptive style balance (it needs the input frames, so the loss has
``uses_frames``), ``feature`` the VGG16 feature reconstruction, ``charbonnier`` the pixel term.

Example:
    >>> from emzoo.models.ssan.loss import paper_loss
    >>> loss = paper_loss(vgg_weights=None)
    >>> loss.uses_frames, sorted(loss.terms)
    (True, ['charbonnier', 'feature', 'style_balance'])
"""

from emzoo.losses import (EM_STYLE_WEIGHT, CharbonnierLoss, CombinedLoss,
                          FeatureReconstructionLoss, StyleBalanceLoss)


def paper_loss(vgg_weights="default"):
    """SSAN's total loss; ``vgg_weights`` as in :mod:`emzoo.losses.vgg` (``None``: random)."""
    terms = {"style_balance": StyleBalanceLoss(vgg_weights=vgg_weights),
             "feature": FeatureReconstructionLoss(vgg_weights=vgg_weights),
             "charbonnier": CharbonnierLoss()}
    return CombinedLoss(terms, {"style_balance": EM_STYLE_WEIGHT}, name="ssan_loss")
