"""The configuration of a training run: one frozen :class:`TrainConfig`, checked once.

:meth:`TrainConfig.resolve` turns what a caller gives :func:`emzoo.training.train` (strings from
the command line included: ``gaps="1,2,4"``, ``overrides=["filters=16"]``) into validated
settings, failing with one clear :class:`~emzoo.errors.EmzooError` before anything is written.
:meth:`TrainConfig.to_json` is what ``run_config.json`` stores under ``"config"``; a resumed run
must agree with it on the :data:`RESUME_FIXED` settings.

Example:
    >>> parse_overrides(["filters=16", "name=abc", "flag=true"])
    {'filters': 16, 'name': 'abc', 'flag': True}
    >>> TrainConfig.from_json({"model": "film", "data": ["a.tif"], "steps": 10}).gaps
    (1, 2, 4)
"""

import dataclasses
import json
import os
import pathlib

from emzoo.errors import EmzooError, check_integer, describe
from emzoo.training.strategies import TRAINING_POLICIES, check_strategy

RUN_CONFIG = "run_config.json"
PIXEL_LOSSES = {"l1": "mean_absolute_error", "l2": "mean_squared_error",
                "mae": "mean_absolute_error", "mse": "mean_squared_error"}
# Settings that must not change when a run is resumed (the data and model they describe).
RESUME_FIXED = ("model", "data", "batch_size", "crop", "gaps", "loss", "overrides", "seed",
                "val_fraction", "optimizer", "learning_rate", "checkpoint_every", "precision",
                "schedule_scale")


def parse_overrides(items):
    """``["filters=16", "pyramid_levels=5", "use_x=true"]`` -> dict with JSON-typed values.

    Example:
        >>> parse_overrides(["filters=16", "name=abc", "flag=true"])
        {'filters': 16, 'name': 'abc', 'flag': True}
    """
    if isinstance(items, dict):
        return dict(items)
    overrides = {}
    for item in items or ():
        if isinstance(item, dict):
            overrides.update(item)
            continue
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise EmzooError(describe("Invalid value for argument `set`.", "key=value pairs",
                                      set=item))
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        overrides[key.strip()] = value
    return overrides


def keras_loss(loss):
    """The Keras loss called ``loss`` (``l1``, ``l2``, ``mae``, ``mse`` or any Keras loss name).

    This is the one check of a loss name: ``paper`` is handled by the caller (it needs the model).
    """
    import keras

    try:
        return keras.losses.get(PIXEL_LOSSES.get(loss, loss))
    except (ValueError, TypeError):
        raise EmzooError(describe(f"Unknown loss `{loss}`.", "paper, l1, l2 or a Keras loss name",
                                  loss=loss)) from None


def check_loss(loss):
    """Raises :class:`EmzooError` unless ``loss`` is ``auto``, ``paper``, a pixel loss or a Keras
    loss name."""
    if loss not in ("auto", "paper") and loss not in PIXEL_LOSSES:
        keras_loss(loss)
    return loss


def recorded_loss(entry):
    """The loss an entry's weights were trained with, when its metadata records it, else None.

    ``metadata.training_loss`` (named entries such as ``default``) or ``metadata.training.loss``
    (folders written by ``emzoo train``).

    Example:
        >>> recorded_loss({"metadata": {"training_loss": "l2"}})
        'l2'
        >>> recorded_loss({"metadata": {}}) is None
        True
    """
    metadata = entry.get("metadata") or {}
    loss = metadata.get("training_loss")
    if loss is None and isinstance(metadata.get("training"), dict):
        loss = metadata["training"].get("loss")
    return loss if isinstance(loss, str) and loss not in ("", "auto") else None


def _entry(model):
    """The zoo entry of a name or folder, or None for an architecture without an entry."""
    from emzoo import zoo

    try:
        return zoo.describe_model(model)
    except zoo.UnknownModelError:
        return None


def initial_weights(model, weights="auto", overrides=None):
    """``(weights, how)``: the starting weights of a run and the start line's words for them.

    ``weights``: ``"auto"`` (the default) means the entry's trained weights when they are
    available (bundled, cached or downloadable; see :func:`emzoo.zoo.check_trained`) and the
    overrides keep the entry's configuration, else random weights; ``"default"`` insists on the
    entry's weights; ``None`` (``--from-scratch``) means random weights; a path, that weights file.
    The first value is what :func:`emzoo.load` takes (``"default"``, None or a path).

    Example:
        >>> initial_weights("default")
        ('default', 'fine-tuning default from its bundled weights')
        >>> initial_weights("default", None)
        (None, 'training default from scratch (random weights: --from-scratch)')
    """
    from emzoo import weights as weights_lib

    text = os.fspath(model)
    if weights is not None and weights not in ("auto", "default"):
        return str(weights), f"fine-tuning {text} from the weights {weights}"
    if weights is None:
        return None, f"training {text} from scratch (random weights: --from-scratch)"
    entry = _entry(text)
    source = "none"
    if entry is not None:
        base_dir = entry.get("_dir") or os.path.dirname(entry["_source"])
        source = weights_lib.source(entry.get("weights"), entry["name"], base_dir)
    available = source in ("bundled", "cached", "download")
    if not available:
        if weights == "default":
            raise EmzooError(describe(f"`{text}` has no trained weights to fine-tune from.",
                                      "--from-scratch (random weights) or --weights PATH",
                                      model=text, weights_source=source))
        return None, f"training {text} from scratch (random weights: it has no trained weights)"
    changed = sorted(k for k, v in (overrides or {}).items() if entry["config"].get(k) != v)
    if changed and weights == "auto":
        return None, (f"training {text} from scratch (random weights: --set changes its "
                      f"configuration: {', '.join(changed)})")
    where = {"bundled": "its saved weights" if entry.get("_dir") else "its bundled weights",
             "cached": "its cached weights", "download": "its downloaded weights"}[source]
    return "default", f"fine-tuning {text} from {where}"


def resolve_loss(model, loss="auto"):
    """``loss``, or for ``"auto"``: the loss the model's entry was trained with when recorded
    (:func:`recorded_loss`), else ``"paper"``."""
    if loss not in (None, "auto"):
        return str(loss)
    entry = _entry(os.fspath(model))
    return (recorded_loss(entry) if entry is not None else None) or "paper"


def _positive(name, value):
    """``value`` as an int >= 1; integer strings (from the command line) are accepted too."""
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            pass
    return check_integer(name, value)


def data_paths(data):
    """The volume paths of ``data`` (a path, a list, or comma-separated), each a 3-D stack.

    Every volume is opened once here, so a missing file or a 2-D image fails before anything is
    written.
    """
    paths = [str(p) for p in ([data] if isinstance(data, (str, os.PathLike)) else data)]
    paths = [p for part in paths for p in part.split(",") if p]
    if not paths:
        raise EmzooError(describe("No training data given.", "one or more volume paths", data=data))
    from emzoo.data.volumes import open_volume

    for path in paths:
        with open_volume(path) as volume:
            if len(volume.shape) != 3:
                raise EmzooError(describe("The training data is not a z-stack.",
                                          "3-D volumes (Z, Y, X)", data=path, shape=volume.shape))
    return paths


def check_crop(paths, crop, gaps):
    """Raises unless every volume has slices of at least ``crop`` pixels and triplets of a gap."""
    from emzoo.data.volumes import open_volume

    for path in paths:
        with open_volume(path) as volume:
            depth, height, width = volume.shape
        if crop > min(height, width):
            raise EmzooError(describe(f"The crop is larger than the slices of {path}.",
                                      f"a crop of at most {min(height, width)} pixels",
                                      crop=crop, slices=f"{height}x{width}"))
        if depth < 2 * min(gaps) + 1:
            raise EmzooError(describe(
                f"{path} has too few slices for triplets with gaps {list(gaps)}.",
                f"at least {2 * min(gaps) + 1} slices", slices=depth))


def check_model(model):
    """The model argument as recorded: a resolved folder path, or a known name."""
    from emzoo import zoo

    text = os.fspath(model)
    path = pathlib.Path(text).expanduser()
    if path.is_dir():
        zoo.describe_model(str(path))
        return str(path.resolve())
    try:
        zoo.describe_model(text)
    except zoo.UnknownModelError:
        if text not in zoo.architectures():
            raise
    return text


def _defaults(cls):
    """The default of every dataclass field of ``cls`` that has one."""
    defaults = {}
    for field in dataclasses.fields(cls):
        if field.default is not dataclasses.MISSING:
            defaults[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            defaults[field.name] = field.default_factory()
    return defaults


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The resolved settings of one run (the arguments of :func:`emzoo.training.train`).

    Build it with :meth:`resolve` (checks and normalises) or :meth:`from_json` (a stored run).
    ``data`` holds resolved paths and ``gaps`` integers, both as tuples; ``overrides`` are the
    model constructor arguments.
    """

    model: str
    data: tuple
    steps: int
    batch_size: int = 8
    crop: int = 256
    gaps: tuple = (1, 2, 4)
    strategy: str = "default"
    overrides: dict = dataclasses.field(default_factory=dict)
    loss: str = "auto"
    learning_rate: float = None
    optimizer: str = "adam"
    checkpoint_every: int = 500
    val_fraction: float = None
    val_batches: int = 4
    seed: int = 0
    precision: str = "float32"
    weights: str = "auto"
    log_every: int = 50
    logical_cpus: int = None
    jit_compile: object = "auto"
    schedule_scale: float = 1.0

    @classmethod
    def resolve(cls, model, data, steps, **settings):
        """The validated configuration; missing settings take the defaults above.

        Checks run in a fixed order and the first failure raises :class:`EmzooError`; the data
        volumes are opened (not read) to check their shape against ``crop`` and ``gaps``.
        """
        unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"TrainConfig.resolve() got unexpected settings: {', '.join(unknown)}")
        s = _defaults(cls)
        s.update(settings)
        gaps = s["gaps"]
        if isinstance(gaps, str):
            gaps = [g for g in gaps.split(",") if g.strip()]
        gaps = tuple(_positive("gaps", g) for g in gaps)
        if not gaps:
            raise EmzooError(describe("Invalid value for argument `gaps`.",
                                      "one or more integers >= 1", gaps=list(gaps)))
        check_strategy(s["strategy"])
        learning_rate, val_fraction = s["learning_rate"], s["val_fraction"]
        if learning_rate is not None and not float(learning_rate) > 0:
            raise EmzooError(describe("Invalid value for argument `learning_rate`.", "a number > 0",
                                      learning_rate=learning_rate))
        if val_fraction is not None and not 0 < float(val_fraction) < 1:
            raise EmzooError(describe("Invalid value for argument `val_fraction`.",
                                      "a number between 0 and 1", val_fraction=val_fraction))
        model_text = check_model(model)
        check_loss(s["loss"])
        overrides = parse_overrides(s["overrides"])
        weights = s["weights"]
        if isinstance(weights, str) and weights.lower() == "none":
            weights = None
        if weights not in ("auto", None, "default"):
            path = pathlib.Path(os.fspath(weights)).expanduser()
            if not path.exists():
                raise EmzooError(describe(f"The weights path {path} does not exist.",
                                          "auto, none, default or a .weights.h5 file",
                                          weights=str(weights)))
            weights = str(path.resolve())
        initial_weights(model_text, weights, overrides)  # raises for weights it cannot use
        config = cls(
            model=model_text,
            data=tuple(str(pathlib.Path(p).resolve()) if ":" not in p else p
                       for p in data_paths(data)),
            steps=_positive("steps", steps),
            batch_size=_positive("batch_size", s["batch_size"]),
            crop=_positive("crop", s["crop"]),
            gaps=gaps,
            strategy=s["strategy"],
            overrides=overrides,
            loss=resolve_loss(model_text, s["loss"]),
            learning_rate=None if learning_rate is None else float(learning_rate),
            optimizer=s["optimizer"],
            checkpoint_every=_positive("checkpoint_every", s["checkpoint_every"]),
            val_fraction=None if val_fraction is None else float(val_fraction),
            val_batches=_positive("val_batches", s["val_batches"]),
            seed=int(s["seed"]),
            precision=resolve_training_precision(s["precision"]),
            weights=weights,
            log_every=_positive("log_every", s["log_every"]),
            logical_cpus=None if not s["logical_cpus"] else int(s["logical_cpus"]),
            jit_compile=s["jit_compile"],
            schedule_scale=float(s["schedule_scale"]),
        )
        check_crop(config.data, config.crop, config.gaps)
        return config

    def to_json(self):
        """The JSON-ready dict ``run_config.json`` stores (lists for ``data`` and ``gaps``)."""
        record = dataclasses.asdict(self)
        record["data"], record["gaps"] = list(self.data), list(self.gaps)
        return record

    @classmethod
    def from_json(cls, record):
        """The configuration :meth:`to_json` wrote (keys it does not know are ignored; a run
        recorded before ``precision`` existed reads its ``mixed_precision`` boolean)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in _current(record).items() if k in known}
        values["data"] = tuple(values.get("data", ()))
        values["gaps"] = tuple(values.get("gaps", cls.gaps))
        return cls(**values)

    def resume_changes(self, stored):
        """The :data:`RESUME_FIXED` settings in which ``stored`` (a :meth:`to_json` dict)
        differs from this configuration."""
        mine, stored = self.to_json(), _current(stored)
        return [k for k in RESUME_FIXED if stored.get(k) != mine.get(k)]


def _current(record):
    """A stored run record in today's keys: ``mixed_precision`` (the boolean of runs recorded
    before ``precision`` existed) becomes ``precision``."""
    if "precision" in record or "mixed_precision" not in record:
        return record
    mixed = record["mixed_precision"]
    record = {k: v for k, v in record.items() if k != "mixed_precision"}
    record["precision"] = resolve_training_precision("mixed" if mixed else "float32")
    return record


def resolve_training_precision(precision):
    """``precision`` of a training run as it is stored: ``"float32"``, ``"bf16"`` or ``"float16"``.

    ``"auto"`` is float32 (as for adaptation: bf16 runs met non-finite losses); ``"mixed"`` is
    float16 with a GPU and bf16 without (what ``--mixed-precision`` asks for).

    Example:
        >>> resolve_training_precision("auto")
        'float32'
    """
    if precision == "auto":
        return "float32"
    if precision == "mixed":
        import tensorflow as tf

        return "float16" if tf.config.list_physical_devices("GPU") else "bf16"
    if precision not in TRAINING_POLICIES:
        raise EmzooError(describe("Invalid value for argument `precision`.",
                                  "auto, float32, bf16 or float16", precision=precision))
    return precision
