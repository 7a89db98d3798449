"""DAN (deformation-aware network) and its paper loss.

Files: ``model.py`` (the blend-net head on the shared trunk of
:mod:`emzoo.models.sparse_attention`), ``loss.py`` (style + VGG16 feature + Charbonnier).
"""

from emzoo.models.dan.loss import paper_loss
from emzoo.models.dan.model import DAN

ARCHITECTURES = (DAN,)

__all__ = ["ARCHITECTURES", "DAN", "paper_loss"]
