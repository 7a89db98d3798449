"""SSAN (sparse self-attention aggregation network) and its paper loss.

Files: ``model.py`` (the hybrid-network head on the shared trunk of
:mod:`emzoo.models.sparse_attention`), ``loss.py`` (style balance + VGG16 feature + Charbonnier).
"""

from emzoo.models.ssan.loss import paper_loss
from emzoo.models.ssan.model import SSAN

ARCHITECTURES = (SSAN,)

__all__ = ["ARCHITECTURES", "SSAN", "paper_loss"]
