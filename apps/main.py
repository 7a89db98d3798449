"""``emzoo <command> [flags]``: dispatches to the thin app module of each subcommand.

Each subcommand is a module of ``emzoo.apps`` defining absl flags and ``main(argv)``; only the
chosen one is imported, so the flags of different commands never clash.
"""

import importlib
import sys

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


def run(argv=None):
    """Console entry point."""
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
    return common.run_app(module.main, [f"emzoo {command}"] + argv[2:], module=module)


if __name__ == "__main__":
    sys.exit(run())
