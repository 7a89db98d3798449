"""``python -m emzoo.napari [FILE ...]``: napari with the "Upscale along z" widget docked.

TensorFlow is imported before napari creates its OpenGL canvas: where OpenGL is Mesa's software
renderer (llvmpipe: virtual machines, remote desktops, Xvfb), TensorFlow cannot load once Mesa's
LLVM is in the process. Before anything is loaded it checks the system libraries Qt's window
needs on Linux (naming the packages to install when one is missing); run as ``python -m``, it ends
by ``os._exit`` once the window is closed, skipping the exit-time destructors that crash beside
TensorFlow (:func:`main` itself returns, so a caller's process goes on).
"""

import os
import sys


def main(argv=None):
    from emzoo.napari.io import missing_qt_libraries, qt_missing_hint

    missing = missing_qt_libraries()  # Qt would abort without a word napari could catch
    if missing:
        print(f"emzoo napari: error: Qt cannot open a window: this machine lacks {', '.join(missing)}. "
              f"Expected them installed: {qt_missing_hint(missing)}.", file=sys.stderr)
        return 1
    import keras  # noqa: F401  (loads the backend first; see the module docstring)
    import napari

    from emzoo.data.volumes import split_container_path
    from emzoo.napari.io import _address, read_layers
    from emzoo.napari.widget import UpscaleWidget

    viewer = napari.Viewer()
    viewer.window.add_dock_widget(UpscaleWidget(viewer), name="Upscale along z", area="right")
    for path in sys.argv[1:] if argv is None else argv:
        if _address(path) and split_container_path(path)[1]:  # file.h5:/dataset: not for napari
            for data, meta, _ in read_layers(path):
                viewer.add_image(data, **meta)
        else:  # HDF5 / N5 files through emzoo's reader: napari's own would claim .h5 and fail
            viewer.open(path, plugin="emzoo" if _address(path) else None)
    napari.run()
    return 0


def exit_without_destructors(status):
    """Ends the process with ``status``, skipping exit-time destructors: TensorFlow's and Mesa's
    crash the process after the window has closed ("free(): invalid pointer", status 134), and
    the work is done. Only for the launcher's own process (never a caller's, e.g. pytest's)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    exit_without_destructors(main())
