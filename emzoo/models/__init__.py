"""Model architectures. Each module registers its classes with :func:`emzoo.zoo.register_architecture`."""

from emzoo.models.base import Interpolator

__all__ = ["Interpolator"]
