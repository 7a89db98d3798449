"""What a volume job runs: a model named, saved, in memory, the flow baseline, or an ensemble.

:func:`resolve_model` turns the ``model`` argument of every volume job into an interpolator:
a registered name or saved folder (loaded with its trained weights), ``"flow"`` (the optical-flow
baseline), a Keras model or any callable, or several of these joined by ``+``
(``"default+dan-em"``): an :class:`Ensemble`, whose midpoints are the mean of its members'
midpoints at every recursion level (each member runs in its own :class:`MidpointEngine`, with its
own tiles, feature reuse, XLA and precision). :func:`check_model_spec` checks a name before any
work (without loading it) and :func:`midpoint_engine` builds the engine a model needs.

Example:
    >>> def mean_model(inputs, training=False):         # any interpolator
    ...     return {"image": (inputs["x0"] + inputs["x1"]) / 2}
    >>> pair = {"x0": np.zeros((1, 8, 8, 1), np.float32), "x1": np.ones((1, 8, 8, 1), np.float32)}
    >>> ensemble = Ensemble([mean_model, mean_model], ["a", "b"])
    >>> engine = midpoint_engine(ensemble, 8, 8)
    >>> float(engine.midpoints([(0, 1)], {0: pair["x0"][0], 1: pair["x1"][0]})[0].mean())
    0.5
"""

import difflib
import math
import os

import numpy as np

from emzoo.engine.midpoint import MidpointEngine, toward_mean
from emzoo.engine.precision import resolve_precision
from emzoo.engine.tiler import Tiler
from emzoo.errors import EmzooError, UnknownModelError, describe

SEPARATOR = "+"  # "default+dan-em": the ensemble of both


def ensemble_names(spec):
    """The member names of an ensemble spec (``"a+b"``), or ``None`` for a single model.

    A path that exists (a saved folder whose name holds ``+``) is a single model.

    Example:
        >>> ensemble_names("default+dan-em"), ensemble_names("default")
        (['default', 'dan-em'], None)
    """
    if not isinstance(spec, (str, os.PathLike)):
        return None
    spec = os.fspath(spec)
    if SEPARATOR not in spec or os.path.exists(os.path.expanduser(spec)):
        return None
    names = [name.strip() for name in spec.split(SEPARATOR)]
    if any(not name for name in names) or len(set(names)) != len(names):
        raise EmzooError(describe(
            "Invalid ensemble: members are joined by `+`, each named once.",
            "two or more different models, e.g. 'default+dan-em'", model=spec))
    return names


def resolve_model(model):
    """``model`` as an interpolator.

    A registered name or saved folder is loaded with its trained weights (one without them is
    refused: see :func:`emzoo.zoo.load_trained`); ``"flow"`` is the optical-flow baseline
    (:class:`emzoo.flow.FlowInterpolator`); ``"a+b"`` is the :class:`Ensemble` of its members;
    an interpolator (a Keras model, an :class:`Ensemble`, any callable) is returned as it is.

    Example:
        >>> type(resolve_model("flow")).__name__
        'FlowInterpolator'
    """
    names = ensemble_names(model)
    if names is not None:
        return Ensemble([resolve_model(name) for name in names], names)
    if isinstance(model, str) and model == "flow":  # the optical-flow baseline: no weights
        from emzoo.flow import FlowInterpolator

        return FlowInterpolator()
    if isinstance(model, (str, os.PathLike)):
        from emzoo import zoo

        try:
            return zoo.load_trained(os.fspath(model), compile=False)
        except UnknownModelError as error:  # the registry does not know the engine's `flow`
            close = difflib.get_close_matches(os.fspath(model), ["flow"])
            raise UnknownModelError(f"{error}. Volume jobs also take `flow` (the optical-flow "
                                    "baseline, no weights)." + (" Did you mean `flow`?" if close
                                                                 else "")) from None
    if not callable(model):
        raise EmzooError(describe("Invalid value for argument `model`.",
                                  "an emzoo model, a registered name or a saved model folder",
                                  model=type(model).__name__))
    return model


def check_model_spec(spec, allow_random_weights=False):
    """Checks a model name before any work, without loading it; returns its size multiple.

    ``spec`` is ``"flow"``, a registered name, a saved folder or an ensemble ``"a+b"`` (whose
    members need trained weights). Returns ``(size_multiple, trained)``: the least common
    multiple of the members' size multiples, and whether every member has trained weights (a
    single model without them is refused unless ``allow_random_weights``).

    Example:
        >>> check_model_spec("flow")
        (1, True)
    """
    from emzoo import zoo

    names = ensemble_names(spec)
    multiple, trained = 1, True
    for name in names or [os.fspath(spec)]:
        if name == "flow":
            continue
        ok = zoo.check_trained(name, allow_random_weights and names is None)
        trained = trained and ok
        size = zoo.describe_model(name).get("metadata", {}).get("size_multiple") or 1
        multiple = math.lcm(multiple, int(size))
    return multiple, trained


class Ensemble:
    """Several interpolators whose midpoints are averaged (at every recursion level of a job).

    Args:
        members: interpolators (Keras models, the flow baseline, callables), two or more.
        names: their names, for reports (default: their class names).

    Attributes: ``members``, ``names``, ``architecture`` (``"ensemble"``), ``channels`` (1:
    each member gets its own channels from its engine), ``size_multiple`` (the least common
    multiple of the members').

    Example:
        >>> class Mean:                                  # needs sizes that are multiples
        ...     def __init__(self, size_multiple):
        ...         self.size_multiple = size_multiple
        ...     def __call__(self, inputs, training=False):
        ...         return {"image": (inputs["x0"] + inputs["x1"]) / 2}
        >>> Ensemble([Mean(4), Mean(6)]).size_multiple
        12
    """

    architecture = "ensemble"
    channels = 1

    def __init__(self, members, names=None):
        self.members = list(members)
        if len(self.members) < 2:
            raise EmzooError(describe("An ensemble needs two or more members.",
                                      "e.g. 'default+dan-em'", members=len(self.members)))
        self.names = list(names) if names is not None else [type(m).__name__ for m in members]
        self.size_multiple = math.lcm(*(int(getattr(m, "size_multiple", 1) or 1)
                                        for m in self.members))

    def __call__(self, inputs, training=False):
        """The mean of the members' ``"image"`` outputs for one batch (NumPy)."""
        from emzoo.models.base import image_of

        images = [np.asarray(image_of(m(inputs, training=training)), np.float32)
                  for m in self.members]
        return {"image": np.mean(images, axis=0)}


class EnsembleEngine:
    """The :class:`MidpointEngine` interface over an :class:`Ensemble`: one engine per member,
    midpoints averaged. Arguments as :class:`MidpointEngine`'s; every member tiles the slices
    alike (padded to the ensemble's size multiple) and computes in one :attr:`precision`
    (``"auto"``: bf16 only where every member can)."""

    def __init__(self, ensemble, height, width, tile=None, overlap=32, precision="float32",
                 **options):
        resolved = {resolve_precision(precision, member) for member in ensemble.members}
        self.precision = "bf16" if resolved == {"bf16"} else "float32"
        self.engines = [MidpointEngine(member, height, width, tile, overlap,
                                       precision=self.precision, **options)
                        for member in ensemble.members]
        self.tiler = Tiler(height, width, tile, overlap, ensemble.size_multiple)
        self.batch_size = min(engine.batch_size for engine in self.engines)

    @property
    def tiler(self):
        """The tiles of the slices (or of a block's window), shared by every member."""
        return self._tiler

    @tiler.setter
    def tiler(self, tiler):
        self._tiler = tiler
        for engine in self.engines:
            engine.tiler = tiler

    @property
    def calls(self):
        """Model calls of all members: ``{"pairs": ..., "extract": ...}``."""
        return {key: sum(engine.calls[key] for engine in self.engines)
                for key in self.engines[0].calls}

    def forget(self, keep=()):
        """Drops the members' cached features (see :meth:`MidpointEngine.forget`)."""
        for engine in self.engines:
            engine.forget(keep)

    def midpoints(self, pairs, slices, scale=1.0):
        """The mean of the members' midpoints of ``pairs`` (see :meth:`MidpointEngine.midpoints`),
        blended towards each pair's mean by ``scale``."""
        each = [engine.midpoints(pairs, slices) for engine in self.engines]
        origin, region = self.tiler.origin, self.tiler.region
        offset = (region[0] - origin[0], region[2] - origin[1])
        return [toward_mean(slices[a], slices[b], np.mean(images, axis=0, dtype=np.float32), scale,
                            offset) for (a, b), images in zip(pairs, zip(*each))]

    fill_grid = MidpointEngine.fill_grid  # level by level, through this engine's midpoints


def midpoint_engine(model, height, width, tile=None, overlap=32, **options):
    """The engine for an interpolator: an :class:`EnsembleEngine` for an :class:`Ensemble`,
    else a :class:`MidpointEngine` (same arguments, ``options`` by keyword)."""
    engine = EnsembleEngine if isinstance(model, Ensemble) else MidpointEngine
    return engine(model, height, width, tile, overlap, **options)
