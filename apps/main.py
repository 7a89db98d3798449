"""``emzoo <command> [flags]``: dispatches to the thin app module of each subcommand.

Each subcommand is a module of ``emzoo.apps`` defining absl flags and ``main(argv)``; only the
chosen one is imported, so the flags of different commands never clash.

Output piped into ``head`` or ``less`` that closes early ends the command quietly with status 0
(no "Broken pipe" error, no traceback). ``emzoo <command> --help`` prints the command's
description as plain text and each flag once (the ``snake_case`` aliases of ``--kebab-case``
flags are accepted but not listed).
"""

import importlib
import os
import re
import sys
import textwrap

COMMANDS = {
    "list": "list the named models",
    "upscale": "upscale a volume along z",
    "repair": "replace damaged slices by interpolation",
    "train": "train or fine-tune a model",
    "adapt": "fine-tune a model on the volume it will upscale (self-supervised)",
    "evaluate": "score a model against baselines on a volume",
    "export": "write a FILM-compatible TensorFlow SavedModel",
    "convert": "convert original FILM SavedModel weights into the cache",
    "prepare": "cut aligned triplets from CREMI-style volumes",
}

# Module names that differ from the command (``list`` would shadow the builtin).
_MODULES = {"list": "list_models"}


def usage():
    lines = ["usage: emzoo <command> [flags]   (emzoo <command> --help for its flags)", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
    lines += ["", "every command also takes --verbose (shows TensorFlow's own logs, hidden by "
              "default)"]
    return "\n".join(lines)


def _verbose(args):
    """Whether ``--verbose`` is among the flags (read before absl parses them)."""
    value = False
    for arg in args:
        if arg == "--":
            break
        if arg in ("--verbose", "--noverbose"):
            value = arg == "--verbose"
        elif arg.startswith("--verbose="):
            value = arg.split("=", 1)[1].lower() in ("1", "true", "t", "yes", "y")
    return value


class _PipeSafe:
    """``sys.stdout`` that goes quiet once its reader has gone (``emzoo list | head``).

    The first ``BrokenPipeError`` points the underlying descriptor at ``/dev/null``, so neither
    later writes nor the interpreter's final flush fail; everything else is the wrapped stream's.
    """

    def __init__(self, stream):
        self._stream = stream
        self.reader_gone = False

    def write(self, text):
        if not self.reader_gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._go_quiet()
        return len(text)

    def flush(self):
        if not self.reader_gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._go_quiet()

    def _go_quiet(self):
        self.reader_gone = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # not a real descriptor (a test's capture)
            pass

    def __getattr__(self, name):
        return getattr(self._stream, name)


_ROLES = re.compile(r":(?:mod|func|class|meth|attr|data|obj|exc|ref):`~?([^`]+)`")


def plain_text(text):
    """reStructuredText roles and literals of a docstring as plain text, for a terminal.

    Example:
        >>> plain_text("See :mod:`emzoo.engine` and ``--factor``; :func:`~emzoo.load`.")
        'See emzoo.engine and --factor; emzoo.load.'
    """
    text = _ROLES.sub(lambda match: match.group(1), text)
    return text.replace("``", "")


def _is_alias(flag):
    return (flag.help or "").startswith("Alias for --")


def _flag_lines(flag, width=100):
    """One flag's help: ``--name: text (default: value)``, wrapped within ``width`` columns."""
    from absl import flags

    name = f"--[no]{flag.name}" if isinstance(flag, flags.BooleanFlag) else f"--{flag.name}"
    if flag.short_name:
        name = f"-{flag.short_name},{name}"
    text = plain_text(" ".join((flag.help or "").split()))
    default = flag.default
    if isinstance(default, bool):
        default = "true" if default else "false"
    elif isinstance(default, (list, tuple)):
        default = ",".join(str(item) for item in default) if default else None
    elif isinstance(default, str) and default == "":
        default = "''"
    if default is not None:
        text += f" (default: {default})"
    return textwrap.wrap(f"{name}: {text}", width, initial_indent="  ", subsequent_indent="      ",
                         break_on_hyphens=False)


def command_help(module):
    """``emzoo <command> --help``: the command's description (plain text) and its flags, each once.

    The flags are the command module's and those every command shares (``--verbose`` and the
    volume flags of :mod:`emzoo.apps.common`), in alphabetical order; aliases are left out.

    Example:
        >>> print(command_help(importlib.import_module("emzoo.apps.list_models")))  # doctest: +SKIP
        emzoo list [PATTERN ...]: the named models ...
    """
    from absl import flags

    lines = [plain_text((module.__doc__ or "").strip()), "", "flags:"]
    seen = set()
    for name in (module.__name__, "emzoo.apps.common"):
        for flag in sorted(flags.FLAGS.get_flags_for_module(name), key=lambda f: f.name):
            if flag.name in seen or _is_alias(flag):
                continue
            seen.add(flag.name)
            lines += _flag_lines(flag)
    return "\n".join(lines)


def _wants_help(args):
    for arg in args:
        if arg == "--":
            return False
        if arg in ("-h", "--help", "--helpshort", "--helpfull"):
            return True
    return False


def run(argv=None):
    """Console entry point."""
    if not isinstance(sys.stdout, _PipeSafe):
        sys.stdout = _PipeSafe(sys.stdout)
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(usage())
        return 0 if len(argv) >= 2 else 2
    command = argv[1]
    if command == "--version":
        from emzoo import __version__

        print(f"emzoo {__version__}")
        return 0
    if command not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(command, list(COMMANDS), n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        print(f"emzoo: unknown command `{command}`.{hint} Expected one of {', '.join(COMMANDS)}. "
              f"Received: command={command!r}", file=sys.stderr)
        return 2
    from emzoo.apps import common

    common.quiet_logs(_verbose(argv[2:]))  # before anything imports TensorFlow
    module = importlib.import_module(f"emzoo.apps.{_MODULES.get(command, command)}")
    if _wants_help(argv[2:]):
        print(command_help(module))
        return 0
    return common.run_app(module.main, [f"emzoo {command}"] + argv[2:], module=module)


if __name__ == "__main__":
    sys.exit(run())
