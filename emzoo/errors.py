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
