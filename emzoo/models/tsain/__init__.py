"""TSAIN (temporal spatial-adaptive interpolation with deformable refinement) and its paper loss.

Files: ``model.py`` (feature pyramid, PCD alignment, spatial-adaptive and deformable refinement
blocks, reconstruction), ``loss.py`` (L2 + VGG16 feature + 1e6 x style).
"""

from emzoo.models.tsain.loss import paper_loss
from emzoo.models.tsain.model import TSAIN

ARCHITECTURES = (TSAIN,)

__all__ = ["ARCHITECTURES", "TSAIN", "paper_loss"]
