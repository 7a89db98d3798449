"""What every app shares: one-line errors, non-zero exits, no tracebacks for user mistakes."""

import sys

from absl import app, flags


def app_help(module):
    """``emzoo <command> --help``: the command's docstring and its flags (with the shared ones)."""
    text = [(module.__doc__ or "").strip(), "", "flags:"]
    for name in (module.__name__, __name__):
        flag_help = flags.FLAGS.module_help(name).strip()
        if flag_help:
            text += flag_help.splitlines()[1:]  # the first line names the module
    return "\n".join(text)


def run_app(main, argv, module=None):
    """Runs an absl ``main`` with ``argv``; user errors print one line and exit 1.

    With ``module`` (the app's module), ``-h``/``--help`` print that command's own flags (absl
    alone would list the flags of the ``emzoo`` script's module, which has none).
    """
    from emzoo.errors import EmzooError

    if module is not None and any(arg in ("-h", "--help", "--helpshort") for arg in argv[1:]):
        print(app_help(module))
        return 0
    try:
        app.run(main, argv=argv)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except flags.Error as error:
        print(f"emzoo: {error}", file=sys.stderr)
        return 2
    except (EmzooError, OSError) as error:
        message = " ".join(str(error).split())
        print(f"emzoo: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("emzoo: interrupted; no output was written.", file=sys.stderr)
        return 130
    return 0


def define_volume_flags():
    """Flags shared by the volume apps (upscale, repair); returns them as attributes.

    Example:
        >>> FLAGS = define_volume_flags()      # at module level of an app  # doctest: +SKIP
        >>> FLAGS.model.value                                                # doctest: +SKIP
        'default'
    """
    import types

    shared = types.SimpleNamespace(
        model=flags.DEFINE_string("model", "default", "A registered model name (`emzoo list`) or a "
                                  "folder written by `emzoo train` / emzoo.save."),
        voxel=flags.DEFINE_string("voxel-size", None, "Voxel size z,y,x in nm, replacing the "
                                  "file's (e.g. 40,4,4)."),
        tile=flags.DEFINE_integer("tile", None, "Process slices larger than TILE pixels in "
                                  "overlapping tiles (saves memory on large slices)."),
        overlap=flags.DEFINE_integer("overlap", 32, "Overlap of neighbouring tiles in pixels."),
        batch=flags.DEFINE_integer("batch-size", None, "Slice pairs (or tiles) per model call "
                                   "(default: 4 with a GPU, 1 on CPU)."),
        overwrite=flags.DEFINE_boolean("overwrite", False, "Replace OUTPUT if it exists."),
        random_weights=define_random_weights_flag(),
        quiet=flags.DEFINE_boolean("quiet", False, "No progress bar."),
        xla=flags.DEFINE_enum("xla", "auto", ["auto", "on", "off"], "XLA-compile the model calls "
                              "(auto: for FILM models on TensorFlow, on jobs long enough to pay "
                              "for the compile)."),
    )
    flags.DEFINE_alias("voxel_size", "voxel-size")
    flags.DEFINE_alias("batch_size", "batch-size")
    return shared


def define_random_weights_flag():
    """``--allow-random-weights``, shared by the apps that run a model (upscale, repair, evaluate,
    export): without it a model with no trained weights is refused before any work."""
    flag = flags.DEFINE_boolean(
        "allow-random-weights", False, "Run a model that has no trained weights on random "
        "weights (smoke tests only; without this flag such a model is refused).")
    flags.DEFINE_alias("allow_random_weights", "allow-random-weights")
    return flag


def job_model(name, allow_random_weights):
    """The model argument for ``upscale_volume`` / ``repair_volume``, checked before any work.

    A model with trained weights stays a name (the engine loads it after its own checks); one
    without them is refused (:func:`emzoo.zoo.check_trained`), or with ``allow_random_weights``
    built here with random weights.
    """
    from emzoo import zoo

    if zoo.check_trained(name, allow_random_weights):
        return name
    return zoo.load(name, weights=None, compile=False)


def xla_setting(value):
    """``--xla`` (auto/on/off) as the engine's ``jit_compile`` argument."""
    return {"on": True, "off": False}.get(value, "auto")


def volume_job_options(shared):
    """The keyword arguments the shared volume flags give ``upscale_volume`` / ``repair_volume``.

    Example:
        >>> engine.repair_volume(source, slices, model, **volume_job_options(_SHARED))  # doctest: +SKIP
    """
    from emzoo.engine import parse_voxel_size

    voxel_size = parse_voxel_size(shared.voxel.value) if shared.voxel.value else None
    return dict(tile=shared.tile.value, overlap=shared.overlap.value,
                batch_size=shared.batch.value, voxel_size=voxel_size,
                overwrite=shared.overwrite.value, progress=not shared.quiet.value,
                jit_compile=xla_setting(shared.xla.value))


def _terminate(signum, frame):
    raise KeyboardInterrupt


def prepare_volume_app():
    """Quiet file-reader warnings (errors are one line) and make SIGTERM unwind like Ctrl-C, so a
    killed run removes its temporary output instead of leaving it behind."""
    import logging
    import signal

    logging.getLogger("tifffile").setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, _terminate)
