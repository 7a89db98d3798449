"""Installs emzoo: the library, its command-line apps (as ``emzoo.apps``) and the zoo configs."""

import pathlib
import re

from setuptools import setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "emzoo" / "__init__.py").read_text()).group(1)


# What `emzoo export --format bioimageio` and `bioimageio test` need, in the extra and in `test`
# (.ci/run installs the extra from a fresh resolve, so an upstream break shows in CI).
BIOIMAGEIO = ["bioimageio.core>=0.7", "pydantic>=2.7,<2.14"]


def _packages(root, prefix):
    """Python packages below ``root`` (folders with an ``__init__.py``), named under ``prefix``."""
    root = HERE / root
    names = []
    for init in sorted(root.rglob("__init__.py")):
        rel = init.parent.relative_to(root)
        names.append(".".join((prefix,) + rel.parts) if rel.parts else prefix)
    return names


setup(
        name="emzoo",
        version=VERSION,
        description="Keras 3 / TensorFlow model zoo for EM slice interpolation and isotropic z-upscaling",
        long_description=(HERE / "README.md").read_text(encoding="utf-8"),
        long_description_content_type="text/markdown",
        python_requires=">=3.10",
        packages=_packages("emzoo", "emzoo") + _packages("apps", "emzoo.apps") + ["emzoo.zoo_configs"],
        package_dir={"emzoo": "emzoo", "emzoo.apps": "apps", "emzoo.zoo_configs": "zoo_configs"},
        package_data={"emzoo.zoo_configs": ["*.json"], "emzoo": ["samples/*", "pretrained/*"],
                      "emzoo.napari": ["napari.yaml"]},
        include_package_data=False,
        install_requires=[
            "keras>=3.0",
            "numpy>=1.26",
            "h5py>=3.8",
            "absl-py>=1.0",
            "tifffile>=2023.1",
            "pillow>=9.0",
            "tqdm>=4.60",
            "scipy>=1.10",  # damage detection (ndimage filters, labelling)
        ],
        extras_require={
            # Pick one: `cpu` for laptops and CPU servers, `gpu` for CUDA servers.
            "cpu": ["tensorflow-cpu>=2.16"],
            "gpu": ["tensorflow[and-cuda]>=2.16"],
            # The optical-flow baseline (`--model flow`, `--baselines flow`).
            "flow": ["opencv-python-headless>=4.5"],
            # Chunked volumes: Zarr v2/v3 and OME-Zarr (zarr-python 3, Python >= 3.11), N5 (TensorStore).
            "zarr": ["zarr>=3.0"],
            "n5": ["tensorstore>=0.1.60"],
            # The blockwise engine (`--workers N`, `--scheduler ADDRESS`): Dask's distributed
            # scheduler, and Zarr for the chunked outputs it writes in place.
            "dask": ["dask[distributed]>=2024.1", "zarr>=3.0; python_version>='3.11'"],
            # The napari plugin (emzoo/napari/): the "Upscale along z" dock widget, HDF5/N5 reader.
            "napari": ["napari[pyqt6]>=0.5"],
            # bioimage.io model packages (`emzoo export --format bioimageio`, `bioimageio test`).
            # bioimageio.core 0.11 pins bioimageio.spec 0.5.12, whose package serializer fails under
            # pydantic 2.14 ("'index_key' is expected to be an integer or a string"): pydantic < 2.14.
            "bioimageio": BIOIMAGEIO,
            # The documentation site (`mkdocs build --strict`; pages in docs/, mkdocs.yml).
            "docs": ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26"],
            "test": ["pytest>=7", "scipy>=1.10", "opencv-python-headless>=4.5", "tensorstore>=0.1.60",
                     "zarr>=3.0; python_version>='3.11'", "ome-zarr>=0.11; python_version>='3.11'",
                     *BIOIMAGEIO, "dask[distributed]>=2024.1"],
        },
        entry_points={"console_scripts": ["emzoo=emzoo.apps.main:run"],
                      "napari.manifest": ["emzoo = emzoo.napari:napari.yaml"]},
)
