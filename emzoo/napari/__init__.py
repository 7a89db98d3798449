"""emzoo inside napari: the "Upscale along z" dock widget and a reader/writer for HDF5 and N5.

Installed with ``pip install "emzoo[napari]"`` and found by napari through the plugin manifest
``napari.yaml`` beside this file (the ``napari.manifest`` entry point). ``import emzoo`` never
imports this package; its modules import napari and Qt, which only the extra installs.
"""
