"""Error types and the one message format every emzoo error uses.

Messages say what was wrong, what was expected, and end with ``Received: name=value``, e.g.::

    Invalid value for argument `factor`. Expected a number >= 1. Received: factor=0.5

Command-line apps catch :class:`EmzooError` (and ``OSError``) and print the message as one line.
"""


class EmzooError(ValueError):
    """Base class of errors caused by user input (files, names, arguments)."""


class UnknownModelError(EmzooError, KeyError):
    """A model name that is neither a registered entry nor a saved model folder."""

    def __str__(self):  # KeyError would add quotes around the message.
        return self.args[0] if self.args else ""


class WeightsError(EmzooError):
    """Weights that cannot be found, downloaded, verified or matched to a model."""


class VolumeError(EmzooError):
    """A volume that cannot be read or written, or whose content is not usable."""


class IncompleteOutputError(VolumeError):
    """A blockwise job that ended before every block was recorded: its output ``path`` is kept,
    marked incomplete, and the same job run again with ``resume=True`` continues it.

    ``problem`` says what happened; the message adds what is kept and how to continue, in the
    library's words (the apps word it with their own flags from ``problem`` and ``path``).

    Example:
        >>> str(IncompleteOutputError("out.zarr", "Block 3 failed."))
        'Block 3 failed. The output out.zarr is kept incomplete; the same job with resume=True continues it.'
    """

    def __init__(self, path, problem):
        self.path, self.problem = str(path), problem.rstrip()
        super().__init__(f"{self.problem} The output {self.path} is kept incomplete; the same job "
                         "with resume=True continues it.")


class JobCancelled(EmzooError):
    """A volume job stopped by its ``cancel`` event (see :func:`emzoo.engine.run`); a single-process
    job leaves no output behind, a blockwise one keeps its output incomplete at ``path``.

    Example:
        >>> str(JobCancelled(None))
        'The job was cancelled; no output was written.'
    """

    def __init__(self, path=None):
        self.path = None if path is None else str(path)
        super().__init__("The job was cancelled; " + (
            "no output was written." if path is None else
            f"the incomplete output {path} is kept and resume=True continues it."))


class JobInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during a blockwise job: its output ``path`` is kept, marked incomplete,
    and ``resume=True`` continues it. Raised from the original interrupt (``__cause__``)."""

    def __init__(self, path):
        self.path = str(path)
        super().__init__(f"interrupted; the incomplete output {self.path} is kept")


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during a run that checkpoints into the folder ``folder``: its last
    checkpoint, at ``step``, is kept (0: none yet, the run starts again), and the same call
    continues it, with ``resume=True`` where ``resume_needed``. Raised from the original
    interrupt (``__cause__``). ``run`` says what was running (``"training"``, ``"adaptation"``)."""

    run = "run"

    def __init__(self, folder, step, resume_needed=True):
        self.folder, self.step, self.resume_needed = str(folder), int(step), bool(resume_needed)
        call = "the same call" + (" with resume=True" if resume_needed else "")
        kept = (f"the {self.run}'s checkpoint at step {step} in {folder} is kept; {call} "
                "continues it" if step else f"no checkpoint yet in {folder}; {call} starts it again")
        super().__init__(f"interrupted; {kept}")


class AdaptationInterrupted(RunInterrupted):
    """Ctrl-C (or SIGTERM) while adapting a model in the run folder ``folder``
    (see :class:`RunInterrupted`)."""

    run = "adaptation"


class TrainingInterrupted(RunInterrupted):
    """Ctrl-C (or SIGTERM) while ``emzoo.training.train`` runs in the run folder ``folder``
    (see :class:`RunInterrupted`): its checkpoints are kept, never removed."""

    run = "training"


class RandomWeightsError(WeightsError):
    """A model asked for with its trained weights, whose entry has none: running it would mean
    random weights, which needs an explicit opt-in (``emzoo.load(name, weights=None)``, or
    ``allow_random_weights=True``). ``name`` is the model, ``problem`` what is missing and
    ``advice`` how to get trained weights.

    Example:
        >>> str(RandomWeightsError("tsain", "`tsain` has no trained weights.", "a trained model"))
        "`tsain` has no trained weights. Expected a trained model, or weights=None (random weights, explicitly). Received: model='tsain'"
    """

    def __init__(self, name, problem, advice):
        self.name, self.problem, self.advice = str(name), problem, advice
        super().__init__(describe(problem, f"{advice}, or weights=None (random weights, "
                                           "explicitly)", model=self.name))


def describe(problem, expected, **received):
    """Formats ``problem``, ``expected`` and the received values into one message.

    Example:
        >>> describe("Invalid value for argument `tile`.", "a multiple of 64", tile=100)
        'Invalid value for argument `tile`. Expected a multiple of 64. Received: tile=100'
    """
    got = ", ".join(f"{k}={v!r}" for k, v in received.items())
    message = f"{problem.rstrip()} Expected {expected.rstrip('.')}."
    return f"{message} Received: {got}" if got else message


def check_integer(name, value, minimum=1):
    """Returns ``value`` as an int, or raises :class:`EmzooError` if it is not an integer >= minimum.

    Example:
        >>> check_integer("filters", 16)
        16
        >>> check_integer("filters", "abc")
        Traceback (most recent call last):
        ...
        emzoo.errors.EmzooError: Invalid value for argument `filters`. Expected a strictly positive integer. Received: filters='abc'
    """
    try:
        ok = not isinstance(value, bool) and int(value) == value and int(value) >= minimum
    except (TypeError, ValueError):
        ok = False
    if not ok:
        expected = "a strictly positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise EmzooError(describe(f"Invalid value for argument `{name}`.", expected,
                                  **{name: value}))
    return int(value)


def one_line(error, limit=None):
    """``error``'s message on one line (whitespace runs collapsed; the class name when empty),
    cut to ``limit`` characters if given: for errors quoted inside another message.

    Example:
        >>> one_line(ValueError("no   such    file"))
        'no such file'
        >>> one_line(ValueError(""))
        'ValueError'
    """
    text = " ".join(str(error).split()) or type(error).__name__
    return text if limit is None else text[:limit]
