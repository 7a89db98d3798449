"""A display for the napari tests, and an end by ``os._exit`` with pytest's own exit status.

Qt needs a display with OpenGL for napari's canvas: an existing ``DISPLAY``, else a private Xvfb
when Debian's ``xvfb`` is installed, else Qt's ``offscreen`` platform (set before Qt loads).

Mesa's software OpenGL (under Xvfb) and TensorFlow each carry LLVM: the tests use Mesa's softpipe
(llvmpipe drawing a shown window crashes beside TensorFlow), and their exit-time
destructors crash the process ("free(): invalid pointer") after every test has passed, which
would turn a green run into exit status 134. This hook runs last, after pytest has written its
report, and skips those destructors.
"""

import atexit
import importlib.util
import os
import shutil
import subprocess
import sys
import time

import pytest

_STATUS = {}


def _display():
    """A display for Qt with OpenGL: an existing one, a private Xvfb, or Qt's offscreen platform."""
    if os.environ.get("DISPLAY") or os.environ.get("QT_QPA_PLATFORM") or \
            importlib.util.find_spec("napari") is None:
        return None
    if shutil.which("Xvfb"):
        for number in range(91, 120):
            if not os.path.exists(f"/tmp/.X11-unix/X{number}") and \
                    not os.path.exists(f"/tmp/.X{number}-lock"):
                # -terminate: the server exits when Qt, its last client, closes at the end.
                server = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "1024x768x24",
                                           "-nolisten", "tcp", "-terminate"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                atexit.register(_stop_unused, server)
                for _ in range(50):
                    if os.path.exists(f"/tmp/.X11-unix/X{number}"):
                        break
                    time.sleep(0.1)
                os.environ["DISPLAY"] = f":{number}"
                # Mesa without LLVM's JIT: llvmpipe drawing a shown window beside TensorFlow crashes.
                os.environ.setdefault("GALLIUM_DRIVER", "softpipe")
                return server
    os.environ["QT_QPA_PLATFORM"] = "offscreen"  # set before Qt loads
    return None


def _stop_unused(server):
    """Stops the Xvfb that no Qt application connected to (all tests skipped or deselected)."""
    qt_widgets = sys.modules.get("qtpy.QtWidgets")
    if qt_widgets is None or qt_widgets.QApplication.instance() is None:
        server.terminate()


_display()


def pytest_sessionfinish(session, exitstatus):
    _STATUS["exit"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    qt_widgets = sys.modules.get("qtpy.QtWidgets")
    if "exit" in _STATUS and qt_widgets is not None and qt_widgets.QApplication.instance() is not None:
        config.get_terminal_writer().flush()  # the summary, when stdout is a file (block-buffered)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_STATUS["exit"])
