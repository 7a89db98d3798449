"""Installing weights converted from other frameworks' checkpoints as emzoo entries.

``emzoo convert film SAVED_MODEL_DIR --name NAME`` ends here: the architecture's folder reads the
foreign checkpoint (:mod:`emzoo.models.film.saved_model` maps an original film_net SavedModel
variable by variable); this module orchestrates the rest: check the name against the registry,
build the model, and write it into the weights cache as a loadable folder (``emzoo.save``), so
``emzoo.load(NAME)`` finds it offline.
"""

import pathlib

from emzoo import weights, zoo
from emzoo.errors import EmzooError, describe
from emzoo.models.film import FILM
from emzoo.models.film.saved_model import infer_config, load_film_saved_model


def convert_film_saved_model(saved_model_dir, name, overwrite=False):
    """Converts an original FILM SavedModel and installs it in the weights cache as ``name``.

    Writes ``<cache>/<name>/model.weights.h5`` (the file :func:`emzoo.weights.resolve` looks for)
    and ``<cache>/<name>/config.json``, so ``emzoo.load(name)`` works offline when ``name`` is a
    registered FILM entry (``film-vimeo``, ``film-ft-em`` ...), and ``emzoo.load(<cache>/<name>)``
    works for any name. For a registered name the SavedModel must fit the entry's configuration;
    otherwise the configuration is read from the variable shapes (:func:`infer_config`).

    Returns:
        The folder written (``<cache>/<name>``).

    Example:
        >>> convert_film_saved_model("film_net/Style/saved_model", "film-vimeo")  # doctest: +SKIP
        PosixPath('/home/me/.cache/emzoo/film-vimeo')
    """
    if not name or "/" in name or name.startswith("."):
        raise EmzooError(describe("Invalid model name for the converted weights.",
                                  "a plain name such as film-vimeo", name=name))
    entry = None
    if name in zoo.list_models():
        entry = zoo.describe_model(name)
        if entry["architecture"] != "film":
            raise EmzooError(describe(f"`{name}` is a registered {entry['architecture']} model.",
                                      "a FILM entry name (emzoo list 'film*') or a new name",
                                      name=name))
        config = dict(entry["config"])
    else:
        config = infer_config(saved_model_dir, {"pyramid_levels": 7})
    destination = weights.cache_dir() / name
    if (destination / "config.json").exists() and not overwrite:
        raise EmzooError(describe(f"Converted weights for `{name}` already exist in {destination}.",
                                  "--overwrite to replace them", name=name))
    model = FILM.from_config(config)
    load_film_saved_model(model, saved_model_dir)
    metadata = dict((entry or {}).get("metadata", {}))
    metadata["converted_from"] = str(pathlib.Path(saved_model_dir).expanduser().resolve())
    model.zoo_entry = {"name": name, "metadata": metadata}
    zoo.save(model, destination, name=name, metadata=metadata, overwrite=overwrite)
    return destination
