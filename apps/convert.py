"""``emzoo convert film SAVED_MODEL_DIR --name NAME``: installs original FILM weights in the cache.

Reads an original film_net SavedModel folder (Google's Style / L1 / VGG releases, the Z-upscaling
fine-tunes), maps every variable by name onto emzoo's FILM and writes
``<cache>/<NAME>/model.weights.h5`` (plus ``config.json``), where ``<cache>`` is ``$EMZOO_HOME`` or
``~/.cache/emzoo``. Afterwards ``emzoo.load(NAME)`` works offline for a registered name.

Example:
    emzoo convert film ~/Downloads/film_net/Style/saved_model --name film-vimeo
"""

from absl import flags

_NAME = flags.DEFINE_string("name", None, "Name to install the weights under, e.g. film-vimeo "
                            "(a registered entry, see `emzoo list 'film*'`, or a new name).")
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace weights already converted under NAME.")


def main(argv):
    import os

    from emzoo.errors import EmzooError, describe

    if len(argv) != 3 or argv[1] != "film":
        raise EmzooError(describe("emzoo convert takes an architecture and a SavedModel folder.",
                                  "emzoo convert film SAVED_MODEL_DIR --name NAME",
                                  arguments=argv[1:]))
    if not _NAME.value:
        raise EmzooError(describe("No name given for the converted weights.",
                                  "--name NAME (e.g. --name film-vimeo)", name=None))
    if not os.path.isdir(os.path.expanduser(argv[2])):  # checked before TensorFlow is imported
        raise EmzooError(describe("The SavedModel folder does not exist.",
                                  "an original FILM saved_model folder (saved_model.pb, variables/)",
                                  saved_model_dir=argv[2]))
    from emzoo import weights

    if (weights.cache_dir() / _NAME.value / "config.json").exists() and not _OVERWRITE.value:
        raise EmzooError(describe(f"Converted weights for `{_NAME.value}` already exist in "
                                  f"{weights.cache_dir() / _NAME.value}.",
                                  "--overwrite to replace them", name=_NAME.value))
    from emzoo.convert import convert_film_saved_model

    folder = convert_film_saved_model(argv[2], _NAME.value, overwrite=_OVERWRITE.value)
    print(f"Converted {argv[2]} into {folder / 'model.weights.h5'}; "
          f"load it with emzoo.load({_NAME.value!r}) (or emzoo.load({str(folder)!r})).")
