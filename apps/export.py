"""``emzoo export NAME [--weights PATH] -o DIR``: writes a FILM-compatible TensorFlow SavedModel.

``--format bioimageio -o NAME.zip`` writes a bioimage.io model package instead
(emzoo.export.bioimageio).

NAME is a registered model (``emzoo list``) or a folder written by ``emzoo train`` / emzoo.save;
``--weights`` overrides its weights (a ``.weights.h5`` file, or an original FILM SavedModel
folder for FILM entries). The result loads with ``tf.saved_model.load(DIR)`` and is called like
an original FILM SavedModel: ``loaded({"x0": x0, "x1": x1, "time": t}, training=False)["image"]``.

Example:
    emzoo export film-vimeo -o film_vimeo_saved_model
    emzoo export default -o default_saved_model
    emzoo export default --format bioimageio -o default.zip
"""

from absl import flags

from emzoo.apps import common

_OUTPUT = flags.DEFINE_string("output", None, "Folder to write the SavedModel to.", short_name="o")
_WEIGHTS = flags.DEFINE_string("weights", None, "Weights to use instead of the entry's "
                               "(a .weights.h5 file or an original FILM SavedModel folder).")
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace DIR if it exists.")
_RANDOM_WEIGHTS = common.define_random_weights_flag()
_FORMAT = flags.DEFINE_enum("format", "savedmodel", ["savedmodel", "bioimageio"],
                            "savedmodel: a FILM-compatible SavedModel folder; bioimageio: a "
                            "bioimage.io model package (-o NAME.zip; needs emzoo[bioimageio]).")


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
    common.check_output_flag(_OUTPUT.value, _OVERWRITE.value)  # before TensorFlow is imported
    if _FORMAT.value == "bioimageio":
        from emzoo.export import bioimageio

        bioimageio.check_ready(_OUTPUT.value)
    if _WEIGHTS.value and not os.path.exists(os.path.expanduser(_WEIGHTS.value)):
        raise EmzooError(describe("The --weights file or folder does not exist.",
                                  "a .weights.h5 file or an original FILM SavedModel folder",
                                  weights=_WEIGHTS.value))
    if _WEIGHTS.value:
        zoo.describe_model(argv[1])  # an unknown name is refused before TensorFlow is imported
        model = zoo.load(argv[1], weights=_WEIGHTS.value, compile=False)
    else:
        model = zoo.load_trained(argv[1], allow_random_weights=_RANDOM_WEIGHTS.value,
                                 compile=False)
    if _FORMAT.value == "bioimageio":
        path = bioimageio.export_bioimageio(model, _OUTPUT.value, overwrite=_OVERWRITE.value)
        print(f"Wrote {path}: a bioimage.io model package (check it with `bioimageio test "
              f"{path}`; emzoo.load({str(path)!r}) loads it back).")
        return
    path = export_saved_model(model, _OUTPUT.value, overwrite=_OVERWRITE.value)
    print(f"Wrote {path}: tf.saved_model.load({str(path)!r})"
          f"({{'x0', 'x1', 'time'}}, training=False)['image'] (size multiple "
          f"{model.size_multiple}, {model.channels} channel(s); RGB input accepted).")
