"""What every app shares: one-line errors, non-zero exits, no tracebacks for user mistakes."""

import sys

from absl import app, flags


def run_app(main, argv):
    """Runs an absl ``main`` with ``argv``; user errors print one line and exit 1."""
    from emzoo.errors import EmzooError

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
