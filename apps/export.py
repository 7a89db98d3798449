"""``emzoo export NAME [--weights PATH] -o DIR``: writes a FILM-compatible TensorFlow SavedModel.

NAME is a registered model (``emzoo list``) or a folder written by ``emzoo train`` / emzoo.save;
``--weights`` overrides its weights (a ``.weights.h5`` file, or an original FILM SavedModel
folder for FILM entries). The result loads with ``tf.saved_model.load(DIR)`` and is called like
an original FILM SavedModel: ``loaded({"x0": x0, "x1": x1, "time": t}, training=False)["image"]``.

Example:
    emzoo export film-vimeo -o film_vimeo_saved_model
    emzoo export default -o default_saved_model
"""

from absl import flags

from emzoo.apps import common

_OUTPUT = flags.DEFINE_string("output", None, "Folder to write the SavedModel to.", short_name="o")
_WEIGHTS = flags.DEFINE_string("weights", None, "Weights to use instead of the entry's "
                               "(a .weights.h5 file or an original FILM SavedModel folder).")
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace DIR if it exists.")
_RANDOM_WEIGHTS = common.define_random_weights_flag()


def main(argv):
    import os

    from emzoo import zoo
    from emzoo.errors import EmzooError, describe
    from emzoo.export import export_saved_model

    if len(argv) != 2:
        raise EmzooError(describe("emzoo export takes one model name.",
                                  "emzoo export NAME [--weights PATH] -o DIR", arguments=argv[1:]))
    if not _OUTPUT.value:
        raise EmzooError(describe("No output folder given.", "-o DIR", output=None))
    if os.path.lexists(os.path.expanduser(_OUTPUT.value)) and not _OVERWRITE.value:  # before any work
        raise EmzooError(describe(f"{_OUTPUT.value} already exists.",
                                  "a new folder, or --overwrite to replace it", output=_OUTPUT.value))
    if _WEIGHTS.value:
        model = zoo.load(argv[1], weights=_WEIGHTS.value, compile=False)
    else:
        model = zoo.load_trained(argv[1], allow_random_weights=_RANDOM_WEIGHTS.value,
                                 compile=False)
    path = export_saved_model(model, _OUTPUT.value, overwrite=_OVERWRITE.value)
    print(f"Wrote {path}: tf.saved_model.load({str(path)!r})"
          f"({{'x0', 'x1', 'time'}}, training=False)['image'] (size multiple "
          f"{model.size_multiple}, {model.channels} channel(s); RGB input accepted).")
