"""``python -m emzoo.napari [FILE ...]``: napari with the "Upscale along z" widget docked.

TensorFlow is imported before napari creates its OpenGL canvas: where OpenGL is Mesa's software
renderer (llvmpipe: virtual machines, remote desktops, Xvfb), TensorFlow cannot load once Mesa's
LLVM is in the process.
"""

import sys


def main(argv=None):
    import keras  # noqa: F401  (loads the backend first; see the module docstring)
    import napari

    from emzoo.data.volumes import split_hdf5_path
    from emzoo.napari.io import _address, read_layers
    from emzoo.napari.widget import UpscaleWidget

    viewer = napari.Viewer()
    viewer.window.add_dock_widget(UpscaleWidget(viewer), name="Upscale along z", area="right")
    for path in sys.argv[1:] if argv is None else argv:
        if _address(path) and split_hdf5_path(path)[1]:  # file.h5:/dataset: not a path napari opens
            for data, meta, _ in read_layers(path):
                viewer.add_image(data, **meta)
        else:  # HDF5 / N5 files through emzoo's reader: napari's own would claim .h5 and fail
            viewer.open(path, plugin="emzoo" if _address(path) else None)
    napari.run()


if __name__ == "__main__":
    main()
