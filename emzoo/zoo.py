"""The registry: architectures (model classes) and named entries (``zoo_configs/*.json``).

An *architecture* is a folder ``emzoo/models/<name>/`` holding an
:class:`emzoo.models.base.Interpolator` subclass (listed in the package's ``ARCHITECTURES``) and its
paper loss; the registry finds it by scanning ``emzoo.models``, so adding an architecture means
adding a folder (and its entries). A *named entry* is data, one JSON file per name::

    {"name": "film-vimeo", "architecture": "film", "config": {...get_config()...},
     "weights": {"url" | "file": ..., "sha256": ..., "format": "keras" | "film_saved_model"} | null,
     "metadata": {"description", "paper", "trained_on", "license", "params", "size_multiple"}}

A folder written by :func:`save` holds the same JSON as ``config.json`` next to its weights, so it
loads exactly like a named entry.

Example:
    >>> import emzoo
    >>> "film" in emzoo.list_models()                    # doctest: +SKIP
    True
    >>> model = emzoo.load("tsain", weights=None)        # paper configuration, random weights
"""

import difflib
import fnmatch
import importlib
import importlib.util
import json
import os
import pathlib
import pkgutil

from emzoo.atomic import atomic_path, write_json
from emzoo.errors import EmzooError, RandomWeightsError, UnknownModelError, WeightsError, describe

_CONFIG_FILE = "config.json"
_WEIGHTS_FILE = "model.weights.h5"
_ARCHITECTURES = {}


def _discover_architectures():
    """Imports every package under ``emzoo/models/`` and collects its ``ARCHITECTURES``.

    An architecture is a folder ``emzoo/models/<name>/`` whose ``__init__`` lists its model
    classes in ``ARCHITECTURES``; each class names itself with its ``architecture`` attribute.
    Plain modules there (``base.py``, shared trunks) are not architectures.
    """
    if _ARCHITECTURES:
        return _ARCHITECTURES
    import emzoo.models

    found = {}
    for info in pkgutil.iter_modules(emzoo.models.__path__):
        if not info.ispkg:
            continue
        module = importlib.import_module(f"emzoo.models.{info.name}")
        for cls in getattr(module, "ARCHITECTURES", ()):
            name = cls.architecture
            if not name:
                raise EmzooError(describe(f"{cls.__qualname__} in emzoo.models.{info.name} has no "
                                          "`architecture` name.", "a class attribute such as "
                                          "architecture = 'film'", architecture=name))
            if name in found and found[name] is not cls:
                raise EmzooError(describe(
                    f"Architecture `{name}` is defined twice ({found[name].__module__} and "
                    f"{cls.__module__}).", "a unique architecture name", architecture=name))
            found[name] = cls
    _ARCHITECTURES.update(found)
    return _ARCHITECTURES


def register_architecture(name):
    """Class decorator adding an architecture defined outside ``emzoo/models/`` (a plugin, a test).

    Built-in architectures need no registration: they are found by scanning ``emzoo.models``.

    Example:
        >>> @register_architecture("my-net")          # doctest: +SKIP
        ... class MyNet(Interpolator): ...
    """

    def decorator(cls):
        found = _discover_architectures()
        existing = found.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise EmzooError(describe(
                f"Architecture `{name}` is already registered to {existing.__qualname__}.",
                "a unique architecture name", name=name))
        cls.architecture = name
        found[name] = cls
        return cls

    return decorator


def architectures():
    """Names of every architecture found under ``emzoo/models/``, sorted."""
    return sorted(_discover_architectures())


def get_architecture(name):
    """The model class of the architecture ``name``."""
    found = _discover_architectures()
    if name not in found:
        raise EmzooError(describe(f"Unknown architecture `{name}`.",
                                  f"one of {', '.join(sorted(found))}", architecture=name))
    return found[name]


def configs_dir():
    """The folder holding the installed ``zoo_configs/*.json`` (the source tree's when not installed)."""
    spec = importlib.util.find_spec("emzoo.zoo_configs")
    if spec is not None and spec.submodule_search_locations:
        return pathlib.Path(list(spec.submodule_search_locations)[0])
    return pathlib.Path(__file__).resolve().parent.parent / "zoo_configs"


def _read_entry(path):
    try:
        entry = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise EmzooError(describe(f"Cannot read the model entry {path}: {error}.",
                                  "a JSON file in the zoo_configs format", path=str(path))) from None
    missing = [key for key in ("name", "architecture", "config") if key not in entry]
    if missing:
        raise EmzooError(describe(f"The model entry {path} lacks {', '.join(missing)}.",
                                  "keys name, architecture, config, weights, metadata",
                                  keys=sorted(entry)))
    entry.setdefault("weights", None)
    entry.setdefault("metadata", {})
    return entry


def _entries():
    entries = {}
    for path in sorted(configs_dir().glob("*.json")):
        entry = _read_entry(path)
        entry["_source"] = str(path)
        entries[entry["name"]] = entry
    return entries


def list_models(pattern="*"):
    """Sorted names of the named entries matching a shell-style ``pattern``.

    Example:
        >>> emzoo.list_models("film*")      # doctest: +SKIP
        ['film', 'film-ft-em', 'film-l1', 'film-sc-em', 'film-vgg', 'film-vimeo']
    """
    return sorted(name for name in _entries() if fnmatch.fnmatch(name, pattern))


def _unpack_package(path):
    """The cache folder holding the emzoo model of a bioimage.io package (emzoo.export.bioimageio).

    The package carries the ``config.json`` and ``model.weights.h5`` of :func:`save`; they are
    unpacked once to ``$EMZOO_HOME/bioimageio/<sha256 of the zip>`` and load like a saved folder.
    """
    import shutil
    import tempfile
    import zipfile

    from emzoo import weights as weights_lib

    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise UnknownModelError(describe(f"{path} is not a zip file.", "a bioimage.io package "
                                         "written by `emzoo export NAME --format bioimageio`",
                                         name_or_dir=str(path))) from None
    with archive:
        names = archive.namelist()
        if _CONFIG_FILE not in names or _WEIGHTS_FILE not in names:
            raise UnknownModelError(describe(
                f"The zip file {path} holds no emzoo model.", "a bioimage.io package written by "
                f"`emzoo export NAME --format bioimageio` (with {_CONFIG_FILE} and "
                f"{_WEIGHTS_FILE})", files=sorted(names)[:8]))
        target = weights_lib.cache_dir() / "bioimageio" / weights_lib.sha256_of(path)[:32]
        if not (target / _CONFIG_FILE).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = pathlib.Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
            try:
                archive.extractall(staging, members=[_WEIGHTS_FILE, _CONFIG_FILE])
                try:
                    os.replace(staging, target)
                except OSError:  # unpacked meanwhile by another process
                    if not (target / _CONFIG_FILE).is_file():
                        raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return target


def describe_model(name_or_dir):
    """The entry (dict) behind a name, a folder saved by :func:`save` or a bioimage.io ``.zip``."""
    path = pathlib.Path(os.fspath(name_or_dir)).expanduser()
    if path.suffix.lower() == ".zip" and path.is_file():  # from `emzoo export --format bioimageio`
        path = _unpack_package(path)
    if path.is_dir():
        if not (path / _CONFIG_FILE).is_file():
            raise UnknownModelError(describe(
                f"The folder {path} is not a saved emzoo model (no {_CONFIG_FILE}).",
                "a registered name or a folder written by emzoo.save", name_or_dir=str(name_or_dir)))
        entry = _read_entry(path / _CONFIG_FILE)
        entry["_source"] = str(path / _CONFIG_FILE)
        entry["_dir"] = str(path)
        return entry
    entries = _entries()
    if name_or_dir in entries:
        return entries[name_or_dir]
    names = sorted(entries)
    close = difflib.get_close_matches(str(name_or_dir), names, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"Unknown model `{name_or_dir}`.{hint} Expected a registered name ({', '.join(names)}) "
        f"or a folder written by emzoo.save. Received: name_or_dir={str(name_or_dir)!r}")


def build_model(entry, **config_overrides):
    """Builds (uncompiled, random weights) the model an entry describes."""
    cls = get_architecture(entry["architecture"])
    config = dict(entry["config"])
    unknown = sorted(set(config_overrides) - set(cls.config_keys()))
    if unknown:
        raise EmzooError(describe(
            f"Unknown configuration key(s) {', '.join(unknown)} for architecture `{entry['architecture']}`.",
            f"some of {', '.join(sorted(cls.config_keys()))}", **{k: config_overrides[k] for k in unknown}))
    config.update(config_overrides)
    model = cls.from_config(config)
    model.build_for_weights()
    return model


def load(name_or_dir, weights="default", compile=True, **config_overrides):
    """Builds a named model (or one saved with :func:`save`) and loads its weights.

    Args:
        name_or_dir: a registered name (see :func:`list_models`) or a folder written by :func:`save`.
        weights: ``"default"`` for the entry's weights (explicit file, then the ``$EMZOO_HOME``
            cache, then download; an entry that has none is refused with a
            :class:`~emzoo.errors.RandomWeightsError`, never silently random), ``None`` for
            random initial weights, or a path to a
            ``.weights.h5`` file (or, for FILM entries, an original FILM SavedModel folder).
        compile: compile with the architecture's paper loss, optimizer and metrics.
        **config_overrides: constructor arguments replacing those of the entry.

    Returns:
        A ``keras.Model`` following the interpolator contract (dict in, dict out).

    Example:
        >>> model = load("film", weights=None, channels=1)
        >>> model.size_multiple
        64
    """
    entry = describe_model(name_or_dir)
    spec = entry.get("weights")
    if weights == "default" and not spec:  # random weights only when asked for: weights=None
        raise _untrained(entry, name_or_dir)
    model = build_model(entry, **config_overrides)
    if weights == "default":
        if spec:
            from emzoo import weights as weights_lib

            path = weights_lib.resolve(spec, entry["name"], base_dir=entry.get("_dir")
                                       or os.path.dirname(entry["_source"]))
            weights_lib.load_into(model, path, weights_lib.guess_format(path), entry=entry)
    elif weights is not None:
        from emzoo import weights as weights_lib

        path = pathlib.Path(os.fspath(weights)).expanduser()
        if not path.exists():
            raise WeightsError(describe(f"The weights path {path} does not exist.",
                                        "a .weights.h5 file or a FILM SavedModel folder",
                                        weights=str(weights)))
        weights_lib.load_into(model, path, weights_lib.guess_format(path), entry=entry)
    model.zoo_entry = {k: v for k, v in entry.items() if not k.startswith("_")}
    if compile:
        model.compile()
    return model


def check_trained(name_or_dir, allow_random_weights=False):
    """True if the trained weights of a name or saved folder are available; refuses it otherwise.

    Available means bundled, cached (e.g. converted) or downloadable; nothing is built or read but
    the entry, so apps call this before any work. Without trained weights, raises
    :class:`WeightsError` naming the entry and what to do (``emzoo train``, or the entry's
    ``convert_command``), or returns False when ``allow_random_weights`` (a smoke test).

    Example:
        >>> check_trained("default")
        True
        >>> check_trained("tsain", allow_random_weights=True)
        False
    """
    from emzoo import weights as weights_lib

    entry = describe_model(name_or_dir)
    spec = entry.get("weights")
    base_dir = entry.get("_dir") or os.path.dirname(entry["_source"])
    found = weights_lib.source(spec, entry["name"], base_dir)
    if found in ("bundled", "cached", "download") or allow_random_weights:
        return found in ("bundled", "cached", "download")
    raise _untrained(entry, name_or_dir, found)


def _untrained(entry, name_or_dir, found=None):
    """The :class:`~emzoo.errors.RandomWeightsError` for an entry without trained weights here:
    what is missing and how to get them (converting, training), in the library's words."""
    spec = entry.get("weights") or {}
    name = entry.get("_dir") or entry["name"]
    if found == "convert":
        where = f" (from {spec['source']})" if spec.get("source") else ""
        command = spec.get("convert_command") or f"emzoo convert film SAVED_MODEL --name {name}"
        return RandomWeightsError(
            name_or_dir, f"`{name}` has no trained weights on this machine: they must be converted "
            "first.", f"its weights converted with `{command}`{where}")
    if entry.get("_dir"):
        return RandomWeightsError(
            name_or_dir, f"The saved model {name} has no trained weights (its weights file is "
            "missing).", f"a folder written by `emzoo train` or emzoo.save with its {_WEIGHTS_FILE}")
    return RandomWeightsError(
        name_or_dir, f"`{name}` has no trained weights (it would run on random weights).",
        f"a trained model: train it with `emzoo train {name} --data VOLUME --output RUN` and use "
        "the folder RUN as the model")


def load_trained(name_or_dir, allow_random_weights=False, **kwargs):
    """:func:`load` with the entry's trained weights, refusing an entry that has none.

    Apps and the volume engine load named models through this, so that a model without trained
    weights never runs silently on random ones (see :func:`check_trained`);
    ``allow_random_weights=True`` builds such a model with random weights instead.
    ``emzoo.load(name, weights=None)`` stays the explicit way to get an untrained model.

    Example:
        >>> model = load_trained("tsain")                  # doctest: +SKIP
        Traceback (most recent call last):
        emzoo.errors.RandomWeightsError: `tsain` has no trained weights (it would run on random weights). ...
    """
    trained = check_trained(name_or_dir, allow_random_weights)
    return load(name_or_dir, weights="default" if trained else None, **kwargs)


def _save_model_weights(model, path):
    """``model.save_weights(path)`` without the optimizer's state.

    Keras 3 writes a compiled model's optimizer variables (Adam's moments: twice the weights)
    into ``.weights.h5`` too; a zoo entry holds the model's weights only (training state lives
    in the run's checkpoints), so the optimizer group is left out.
    """
    import h5py

    model.save_weights(path)
    with h5py.File(path, "r") as source:
        if "optimizer" not in source:
            return
        with atomic_path(path, suffix=".h5") as slim, h5py.File(slim, "w") as target:
            for key, value in source.attrs.items():
                target.attrs[key] = value
            for key in source:
                if key != "optimizer":
                    source.copy(source[key], target, name=key)


def save(model, directory, name=None, metadata=None, overwrite=False):
    """Writes ``model`` as a folder that :func:`load` accepts like a named entry.

    The folder holds ``config.json`` (the zoo entry: architecture, ``get_config()``, weights
    file and sha256, metadata) and ``model.weights.h5``.

    Example:
        >>> emzoo.save(model, "runs/my-film")            # doctest: +SKIP
        >>> same = emzoo.load("runs/my-film")            # doctest: +SKIP
    """
    from emzoo import weights as weights_lib

    directory = pathlib.Path(directory)
    config_path = directory / _CONFIG_FILE
    if config_path.exists() and not overwrite:
        raise EmzooError(describe(f"{config_path} already exists.",
                                  "a new folder, or overwrite=True", directory=str(directory)))
    directory.mkdir(parents=True, exist_ok=True)
    weights_path = directory / _WEIGHTS_FILE
    with atomic_path(weights_path, suffix=".weights.h5") as tmp:
        _save_model_weights(model, tmp)
    meta = dict(getattr(model, "zoo_entry", {}).get("metadata", {}))
    meta.update(metadata or {})
    meta["params"] = int(model.count_params())
    meta["size_multiple"] = int(model.size_multiple)
    entry = {
        "name": name or directory.name,
        "architecture": model.architecture,
        "config": model.get_config(),
        "weights": {"file": _WEIGHTS_FILE, "sha256": weights_lib.sha256_of(weights_path), "format": "keras"},
        "metadata": meta,
    }
    write_json(config_path, entry)
    return directory
