"""Model architectures, one folder each (``film/``, ``tsain/``, ``ssan/``, ``dan/``).

Each folder holds the model, its paper loss and whatever only that architecture needs, and lists
its model classes in ``ARCHITECTURES``; :mod:`emzoo.zoo` finds them by scanning this package.
``base.py`` is the interpolator contract every model follows; ``sparse_attention.py`` is the
trunk SSAN and DAN share.
"""

from emzoo.models.base import Interpolator

__all__ = ["Interpolator"]
