"""What every app shares: one-line errors, non-zero exits, no tracebacks for user mistakes."""

import logging
import os
import sys

from absl import app, flags

VERBOSE = flags.DEFINE_boolean("verbose", False, "Show TensorFlow's own start-up and INFO logs "
                               "(hidden by default).")

# The exit status of a process ended by SIGTERM (128 + 15), as shells report it.
TERMINATED_EXIT = 143


class Terminated(KeyboardInterrupt):
    """Raised by the SIGTERM handler; unwinds like Ctrl-C, so temporary outputs are removed."""


def quiet_logs(verbose):
    """Hides TensorFlow's own logs unless ``verbose``; call before TensorFlow is imported.

    The library's :func:`emzoo.engine.quiet.quiet_logs` (which also keeps TensorFlow's start-up
    lines of local Dask workers off the terminal, unless ``verbose``).
    """
    from emzoo.engine.quiet import quiet_logs as quiet

    quiet(verbose)


def _with_quiet_absl(main):
    """``main`` run after absl's own INFO logs (which TensorFlow uses while writing a SavedModel)
    are limited to warnings, unless ``--verbose`` or an explicit ``--verbosity`` says otherwise."""
    def run(argv):
        from absl import logging as absl_logging

        if not VERBOSE.value and not flags.FLAGS["verbosity"].present:
            absl_logging.set_verbosity(absl_logging.WARNING)
        return main(argv)
    return run


def _missing_backend(error, command):
    """The one line for a missing TensorFlow (the plain ``pip install emzoo`` has none) or a
    missing Keras backend named by ``KERAS_BACKEND``; ``None`` for any other missing module."""
    from emzoo.errors import describe

    missing = (error.name or "").split(".")[0]
    if missing == "tensorflow":
        return describe(f"TensorFlow is not installed, and `{command}` needs it.",
                        'TensorFlow, installed with emzoo\'s extra: pip install "emzoo[cpu]" '
                        '(or "emzoo[gpu]" on a machine with an NVIDIA GPU)', missing=missing)
    backend = os.environ.get("KERAS_BACKEND", "")
    if missing and missing in ("jax", "jaxlib", "torch") and backend in ("jax", "torch"):
        return describe(f"KERAS_BACKEND={backend} selects a backend that is not installed.",
                        f"{backend} installed, or KERAS_BACKEND unset (TensorFlow)",
                        missing=missing)
    return None


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

    A missing TensorFlow is one line too (it is an extra: ``emzoo[cpu]`` / ``emzoo[gpu]``), and
    SIGTERM unwinds like Ctrl-C (temporary outputs are removed), then exits 143.

    With ``module`` (the app's module), ``-h``/``--help`` print that command's own flags (absl
    alone would list the flags of the ``emzoo`` script's module, which has none).
    """
    import signal

    from emzoo.errors import EmzooError

    if module is not None and any(arg in ("-h", "--help", "--helpshort") for arg in argv[1:]):
        print(app_help(module))
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app.run(_with_quiet_absl(main), argv=argv)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except flags.Error as error:
        print(f"emzoo: {error}", file=sys.stderr)
        return 2
    except (EmzooError, OSError) as error:
        print(f"emzoo: error: {cli_message(error)}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as error:
        message = _missing_backend(error, argv[0])
        if message is None:
            raise
        print(f"emzoo: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Terminated) or isinstance(stop.__cause__, Terminated)
        left = interrupted_message(stop, terminated)
        if terminated:
            print(f"emzoo: terminated (SIGTERM); {left}", file=sys.stderr)
            return TERMINATED_EXIT
        print(f"emzoo: interrupted; {left}", file=sys.stderr)
        return 130
    return 0


# Python argument -> command-line flag, for the library's messages (which name arguments).
FLAG_NAMES = {
    "tile": "--tile", "overlap": "--overlap", "batch_size": "--batch-size",
    "voxel_size": "--voxel-size", "overwrite": "--overwrite", "resume": "--resume",
    "workers": "--workers", "scheduler": "--scheduler", "block_size": "--block-size",
    "chunks": "--chunks", "allow_incomplete": "--allow-incomplete", "precision": "--precision",
    "xla": "--xla", "factor": "--factor", "isotropic": "--isotropic", "slices": "--slices",
    "allow_random_weights": "--allow-random-weights", "model": "--model", "output": "-o",
}


def cli_message(error):
    """``error``'s message on one line, worded for the command line: the argument names of the
    library (```tile```, ``overwrite=True``) become the flags that set them (``--tile``,
    ``--overwrite``) before ``Received:``, and typed errors say which flag continues or allows
    what they stopped.

    Example:
        >>> from emzoo.errors import EmzooError
        >>> cli_message(EmzooError("Invalid value for argument `batch_size`. Expected a strictly "
        ...                        "positive integer. Received: batch_size=0"))
        'Invalid value for --batch-size. Expected a strictly positive integer. Received: batch_size=0'
    """
    import re

    from emzoo.errors import IncompleteOutputError, RandomWeightsError, describe, one_line

    if isinstance(error, IncompleteOutputError):
        return one_line(f"{error.problem} The output {error.path} is kept incomplete; continue it "
                        "with --resume.")
    if isinstance(error, RandomWeightsError):
        return one_line(describe(error.problem, f"{error.advice}, or --allow-random-weights to run "
                                 "it on random weights anyway", model=error.name))
    text = one_line(error)
    head, marker, received = text.partition(" Received: ")

    def flag(match):
        name = match.group("name")
        return FLAG_NAMES.get(name, match.group(0))
    head = re.sub(r"argument `(?P<name>\w+)`", flag, head)
    head = re.sub(r"`(?P<name>\w+)`", flag, head)
    head = re.sub(r"\b(?P<name>\w+)=True\b", flag, head)
    return head + marker + received


def interrupted_message(stop, terminated):
    """What an app says is left after Ctrl-C / SIGTERM (``stop``), from the typed interrupt:
    a blockwise output kept incomplete, a training or adaptation checkpoint kept, or nothing."""
    from emzoo.errors import JobInterrupted, RunInterrupted

    if isinstance(stop, JobInterrupted):
        return f"the incomplete output {stop.path} is kept; continue it with --resume."
    if isinstance(stop, RunInterrupted):
        again = "the same command" + (" with --resume" if stop.resume_needed else "")
        if stop.step:
            return f"checkpoint at step {stop.step} in {stop.folder} kept; {again} continues it."
        return f"no checkpoint yet in {stop.folder}; {again} starts it again."
    return "unfinished output was removed." if terminated else "no output was written."


def define_overwrite_flag(help_text="Replace OUTPUT if it exists."):
    """``--overwrite``, one definition for every app that writes (its help says what it replaces)."""
    return flags.DEFINE_boolean("overwrite", False, help_text)


def define_precision_flag(default="auto", help_text=None):
    """``--precision`` (auto / float32 / bf16): what the model computes in, see
    :mod:`emzoo.engine.precision`."""
    from emzoo.engine.precision import PRECISIONS

    return flags.DEFINE_enum(
        "precision", default, list(PRECISIONS), help_text or (
            "What the model computes in: bf16 (Keras mixed_bfloat16: CPUs with AVX512-BF16/AMX, "
            "GPUs of compute capability >= 8.0; refused elsewhere) or float32; auto: bf16 where "
            "supported, else float32 (speed and PSNR of both: benchmarks/README.md)."))


def define_batch_size_flag(default=None, help_text=None):
    """``--batch-size`` (alias ``--batch_size``): slice pairs (or tiles) per model call."""
    flag = flags.DEFINE_integer("batch-size", default, help_text or (
        "Slice pairs (or tiles) per model call (default: 4 with a GPU, 1 on CPU)."))
    flags.DEFINE_alias("batch_size", "batch-size")
    return flag


def define_volume_flags():
    """Flags shared by the volume apps (upscale, repair); returns them as attributes.

    Example:
        >>> FLAGS = define_volume_flags()      # at module level of an app  # doctest: +SKIP
        >>> FLAGS.model.value                                                # doctest: +SKIP
        'default'
    """
    import types

    from emzoo.engine.blocks import DEFAULT_REGION

    shared = types.SimpleNamespace(
        model=flags.DEFINE_string("model", "default", "A registered model name (`emzoo list`), a "
                                  "folder written by `emzoo train` / emzoo.save, `flow` (the "
                                  "optical-flow baseline), or models joined by + (an ensemble "
                                  "averaging their midpoints, e.g. default+dan-em)."),
        voxel=flags.DEFINE_string("voxel-size", None, "Voxel size z,y,x in nm, replacing the "
                                  "file's (e.g. 40,4,4)."),
        tile=flags.DEFINE_integer("tile", None, "Process slices larger than TILE pixels in "
                                  "overlapping tiles (saves memory on large slices)."),
        overlap=flags.DEFINE_integer("overlap", 32, "Overlap of neighbouring tiles in pixels."),
        batch=define_batch_size_flag(),
        overwrite=define_overwrite_flag(),
        random_weights=define_random_weights_flag(),
        workers=flags.DEFINE_integer("workers", None, "Run blockwise on a local Dask cluster of "
                                     "WORKERS processes (output: .zarr, .ome.zarr or .n5)."),
        scheduler=flags.DEFINE_string("scheduler", None, "Run blockwise on the existing Dask "
                                      "cluster at this address (e.g. tcp://10.0.0.5:8786)."),
        resume=flags.DEFINE_boolean("resume", False, "Continue the blockwise job that left OUTPUT "
                                    "incomplete: redo only the blocks not recorded as finished."),
        allow_incomplete=flags.DEFINE_boolean("allow-incomplete", False, "Read an input that is "
                                              "the unfinished output of an emzoo job."),
        chunks=flags.DEFINE_string("chunks", None, "Chunk shape z,y,x of a .zarr / .ome.zarr / "
                                   ".n5 output (default: up to 8,256,256)."),
        block_size=flags.DEFINE_integer("block-size", None, "Blockwise: y and x pixels of a "
                                        "block, rounded up to whole chunks (default "
                                        f"{DEFAULT_REGION})."),
        quiet=flags.DEFINE_boolean("quiet", False, "No progress bar."),
        xla=flags.DEFINE_enum("xla", "auto", ["auto", "on", "off"], "XLA-compile the model calls "
                              "(auto: for FILM models on TensorFlow, on jobs long enough to pay "
                              "for the compile)."),
        precision=define_precision_flag(),
    )
    flags.DEFINE_alias("voxel_size", "voxel-size")
    flags.DEFINE_alias("allow_incomplete", "allow-incomplete")
    flags.DEFINE_alias("block_size", "block-size")
    return shared


def define_random_weights_flag():
    """``--allow-random-weights``, shared by the apps that run a model (upscale, repair, evaluate,
    export): without it a model with no trained weights is refused before any work."""
    flag = flags.DEFINE_boolean(
        "allow-random-weights", False, "Run a model that has no trained weights on random "
        "weights (smoke tests only; without this flag such a model is refused).")
    flags.DEFINE_alias("allow_random_weights", "allow-random-weights")
    return flag


def job_model(name, allow_random_weights, options=None):
    """The model argument for :func:`emzoo.engine.run`, checked before any work.

    A model with trained weights (or ``flow``, or an ensemble ``a+b`` of such) stays a name (the
    engine loads it); one without them is refused
    (:func:`emzoo.zoo.check_trained`), or with ``allow_random_weights`` built here with random
    weights. With ``options`` (:class:`~emzoo.engine.EngineOptions`), their tile is held against
    the size multiple the model's entry records, before TensorFlow is imported.
    """
    from emzoo import zoo
    from emzoo.engine.interpolators import check_model_spec

    multiple, trained = check_model_spec(name, allow_random_weights)  # flow: no weights, any tile
    if options is not None:
        options.check_tile(multiple)
    return name if trained else zoo.load(name, weights=None, compile=False)


def check_flag_integer(flag, value, minimum=1, example=None):
    """``value`` of ``--flag`` as an int >= ``minimum`` (``None`` stays ``None``), checked before
    any work; the message names the flag as typed."""
    from emzoo.errors import EmzooError, describe

    if value is None:
        return None
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise EmzooError(describe(f"Invalid value for --{flag}.",
                                  expected + (f" (e.g. --{flag} {example})" if example else ""),
                                  **{flag.replace("-", "_"): value}))
    return int(value)


def check_output_flag(output, overwrite, kind="file"):
    """Refuses, before any work, an ``-o`` that exists (without ``--overwrite``) or whose folder
    does not exist; for ``kind="volume"`` also a name no volume format writes."""
    from emzoo.data.volumes import split_container_path, writer_class
    from emzoo.errors import EmzooError, describe

    path = os.path.expanduser(os.fspath(output))
    file = split_container_path(path)[0] if kind == "volume" else path
    if kind == "volume":
        writer_class(path)
    if os.path.lexists(file) and not overwrite:
        raise EmzooError(describe(f"The output {file} already exists.",
                                  "a new path, or --overwrite to replace it", output=output))
    folder = os.path.dirname(os.path.abspath(file))
    if not os.path.isdir(folder):
        raise EmzooError(describe(f"The output folder {folder} does not exist.",
                                  "a path in an existing folder", output=output))


def volume_job(shared):
    """The job settings the shared volume flags give, built in this one place: the keyword
    arguments of :func:`emzoo.engine.plan_upscale` / :func:`~emzoo.engine.plan_repair` besides
    the input, the output and what is computed. Every value is checked by what it builds
    (:class:`~emzoo.engine.EngineOptions`, :class:`~emzoo.engine.Blockwise`), before TensorFlow
    is imported.

    Example:
        >>> plan = engine.plan_repair(source, slices, output, **volume_job(_SHARED))  # doctest: +SKIP
    """
    from emzoo.engine import Blockwise, EngineOptions, parse_voxel_size

    blockwise = None
    if (shared.workers.value is not None or shared.scheduler.value is not None
            or shared.resume.value or shared.block_size.value is not None):
        blockwise = Blockwise(shared.workers.value, shared.scheduler.value,
                              shared.block_size.value, shared.resume.value)
    options = EngineOptions(tile=shared.tile.value, overlap=shared.overlap.value,
                            batch_size=shared.batch.value, xla=xla_setting(shared.xla.value),
                            precision=shared.precision.value)
    return dict(options=options, blockwise=blockwise,
                voxel_size=parse_voxel_size(shared.voxel.value) if shared.voxel.value else None,
                overwrite=shared.overwrite.value, allow_incomplete=shared.allow_incomplete.value,
                chunks=parse_chunks(shared.chunks.value))


def job_summary(result, what):
    """The line the volume apps print for a finished job (``what``: the job and model in words).

    Example:
        >>> job_summary({"output": "o.tif", "output_shape": (5, 8, 8), "dtype": "uint8",
        ...              "voxel_size": None, "seconds": 1.0, "precision": "float32"}, "x2 with model m")
        'Wrote o.tif: 5 x 8 x 8 uint8, unknown voxel size (x2 with model m, 1.0 s, float32)'
    """
    if result.get("already_complete"):
        return result["summary"]
    shape = " x ".join(str(s) for s in result["output_shape"])
    voxel = result["voxel_size"]
    voxel = "unknown voxel size" if voxel is None else "voxel " + " x ".join(
        f"{v:g}" for v in voxel) + " nm"
    return (f"Wrote {result['output']}: {shape} {result['dtype']}, {voxel} ({what}, "
            f"{result['seconds']:.1f} s, {result['precision']}{blockwise_note(result)})")


def blockwise_note(summary):
    """What the apps add to their last line for a blockwise job (empty for a single-process one).

    Example:
        >>> blockwise_note({"blocks": 30, "computed": 12, "skipped": 18, "workers": 2, "threads": 1})
        ', 12 of 30 blocks computed (18 done before) on 2 Dask workers, 1 TensorFlow thread each'
    """
    if "blocks" not in summary:
        return ""
    note = f", {summary['computed']} of {summary['blocks']} blocks computed"
    if summary.get("skipped"):
        note += f" ({summary['skipped']} done before)"
    note += f" on {summary['workers']} Dask worker{'s' if summary['workers'] != 1 else ''}"
    if summary.get("threads") is not None:
        note += f", {summary['threads']} TensorFlow thread{'s' if summary['threads'] != 1 else ''} each"
    return note


def parse_chunks(text):
    """``--chunks z,y,x`` as a tuple of three positive ints (``None`` stays ``None``).

    Example:
        >>> parse_chunks("8,256,256")
        (8, 256, 256)
    """
    from emzoo.errors import EmzooError, describe

    if text is None:
        return None
    try:
        chunks = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        chunks = ()
    if len(chunks) != 3 or min(chunks) < 1:
        raise EmzooError(describe("Invalid value for --chunks.", "three positive integers z,y,x, "
                                  "e.g. --chunks 8,256,256", chunks=text))
    return chunks


def xla_setting(value):
    """``--xla`` (auto/on/off) as the engine's ``jit_compile`` argument."""
    return {"on": True, "off": False}.get(value, "auto")


def _terminate(signum, frame):
    raise Terminated


def prepare_volume_app():
    """Quiet file-reader warnings (errors are one line). SIGTERM is handled by :func:`run_app`."""
    logging.getLogger("tifffile").setLevel(logging.ERROR)
