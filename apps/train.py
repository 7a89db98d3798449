"""``emzoo train MODEL --data PATH[,PATH...] --steps N -o DIR``: trains or fine-tunes a model.

MODEL is an architecture / entry name or a folder written by ``emzoo train`` / ``emzoo.save``. An
entry or folder with trained weights is fine-tuned from them (``default``: its bundled weights)
with the loss it was trained with when recorded (``default``: l2); ``--from-scratch`` starts from
random weights, ``--loss`` picks another loss. The start line says which. See
:mod:`emzoo.training` for checkpoints, exact resume (``--resume``), strategies and the run folder.

Example:
    emzoo train default --data mine.tif --steps 2000 --crop 128 --gaps 1 -o runs/default-mine
    emzoo train film --data a.tif,b.tif --steps 20000 --batch-size 8 --crop 256 --gaps 1,2,4 \\
        --set filters=16 --set pyramid_levels=5 --output runs/film-em
    emzoo train film ... --output runs/film-em --resume      # after an interruption
"""

from absl import flags

from emzoo.apps import common
from emzoo.training.strategies import STRATEGIES

_DATA = flags.DEFINE_string("data", None, "Training volume(s), comma-separated.")
_STEPS = flags.DEFINE_integer("steps", 1000, "Total optimizer steps.")
_BATCH = flags.DEFINE_integer("batch-size", 8, "Global training batch size: triplets per optimizer "
                              "step, split across replicas (unlike the --batch-size of upscale, "
                              "repair and evaluate: slice pairs per model call).")
_CROP = flags.DEFINE_integer("crop", 256, "Square crop size of the training triplets.")
_GAPS = flags.DEFINE_string("gaps", "1,2,4", "Triplet gaps (z-g, z, z+g), comma-separated.")
_STRATEGY = flags.DEFINE_enum("strategy", "default", list(STRATEGIES),
                              "tf.distribute strategy (multi_worker reads TF_CONFIG).")
_OUTPUT = flags.DEFINE_string("output", None, "Run folder (checkpoints, logs, final model).",
                              short_name="o")
_SCRATCH = flags.DEFINE_boolean("from-scratch", False, "Start from random weights, not from the "
                                "model's trained weights (the default when it has them).")
_WEIGHTS = flags.DEFINE_string("weights", "auto", "Starting weights: auto (the model's trained "
                               "weights when it has them, else random), none (random: same as "
                               "--from-scratch) or a .weights.h5 file.")
_SET = flags.DEFINE_multi_string("set", [], "Model constructor override key=value (repeatable).")
_RESUME = flags.DEFINE_boolean("resume", False, "Continue the run in --output from its last checkpoint.")
_PRECISION = flags.DEFINE_enum("precision", "auto", ["auto", "float32", "bf16", "float16"],
                               "What the training computes in (weights stay float32): bf16 "
                               "(mixed_bfloat16), float16 (mixed_float16, for GPUs), float32; "
                               "auto: float32.")
_MIXED = flags.DEFINE_boolean("mixed-precision", False, "Older spelling of --precision float16 "
                              "with a GPU, --precision bf16 without.")
_LR = flags.DEFINE_float("learning-rate", None, "Adam learning rate (default: the architecture's).")
_EVERY = flags.DEFINE_integer("checkpoint-every", 500, "Steps between checkpoints.")
_LOSS = flags.DEFINE_string("loss", "auto", "auto (the loss the model's entry records it was "
                            "trained with, else paper), paper (the architecture's paper loss with "
                            "its schedule), l1, l2 or a Keras loss name.")
_VAL = flags.DEFINE_float("val-fraction", None, "Validation fraction of each volume's z-range.")
_SCHEDULE = flags.DEFINE_float("schedule-scale", 1.0, "Multiplies the paper loss's schedule boundaries.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the data stream and initial weights.")
_JIT = flags.DEFINE_enum("jit-compile", "auto", ["auto", "true", "false"],
                         "XLA for the training step: auto (Keras: on with a GPU, off on a CPU), "
                         "true or false. On a CPU, XLA pays for models with a deformable "
                         "convolution (TSAIN, DAN); see benchmarks/README.md.")
_CPUS = flags.DEFINE_integer("cpu-devices", None, "Split the CPU into N logical devices (mirrored tests).")
for _name in ("batch-size", "mixed-precision", "learning-rate", "checkpoint-every", "val-fraction",
              "schedule-scale", "cpu-devices", "from-scratch", "jit-compile"):
    flags.DEFINE_alias(_name.replace("-", "_"), _name)


def main(argv):
    import contextlib
    import os
    import sys

    from emzoo.errors import EmzooError, describe

    if len(argv) != 2:
        raise EmzooError(describe("emzoo train takes one model.",
                                  "emzoo train MODEL --data PATH --steps N --output DIR", arguments=argv[1:]))
    needed = {"data": "--data PATH[,PATH...]: the training volumes (TIFF, HDF5, Zarr, N5, a folder "
                      "of slices, or the word sample for the bundled sample)",
              "output": "--output DIR: the run folder for checkpoints, logs and the trained model"}
    for name, holder in (("data", _DATA), ("output", _OUTPUT)):
        if not holder.value:
            raise EmzooError(describe(f"emzoo train needs --{name}.", needed[name], **{name: None}))
    # Before TensorFlow is imported (a typo costs no start-up), with the flags' own names.
    for flag, holder in (("steps", _STEPS), ("batch-size", _BATCH), ("crop", _CROP),
                         ("checkpoint-every", _EVERY)):
        common.check_flag_integer(flag, holder.value)
    if not os.path.isdir(os.path.expanduser(argv[1])):
        from emzoo import zoo

        zoo.describe_model(argv[1])  # an unknown name lists the valid ones and close matches
    weights = _WEIGHTS.value
    if _SCRATCH.value:
        if weights not in ("auto", "none"):
            raise EmzooError(describe("--from-scratch and --weights contradict each other.",
                                      "one of them", weights=weights, from_scratch=True))
        weights = "none"
    precision = _PRECISION.value
    if _MIXED.value:
        if flags.FLAGS["precision"].present:
            raise EmzooError(describe("--mixed-precision and --precision contradict each other.",
                                      "one of them", mixed_precision=True, precision=precision))
        precision = "mixed"
    # Keras prints on stdout; everything a run says belongs on stderr (stdout may be a file).
    # The progress itself is emzoo's: a bar on a terminal, plain lines in a log.
    with contextlib.redirect_stdout(sys.stderr):
        _train(argv[1], weights, precision)


def _train(model, weights, precision):
    import sys

    from emzoo import training

    training.train(model, weights=weights, data=_DATA.value, steps=_STEPS.value, batch_size=_BATCH.value,
                   crop=_CROP.value, gaps=_GAPS.value, strategy=_STRATEGY.value, output=_OUTPUT.value,
                   overrides=_SET.value, resume=_RESUME.value, precision=precision,
                   learning_rate=_LR.value, checkpoint_every=_EVERY.value, loss=_LOSS.value,
                   val_fraction=_VAL.value, schedule_scale=_SCHEDULE.value, seed=_SEED.value,
                   logical_cpus=_CPUS.value,
                   jit_compile={"true": True, "false": False}.get(_JIT.value, "auto"),
                   command=["emzoo"] + list(sys.argv[1:]))
