"""bioimage.io model packages of emzoo models (``emzoo export NAME --format bioimageio``).

A package (a ``.zip`` in the current bioimage.io model format, checked with ``bioimageio.spec``)
runs in bioimage.io's tools (``bioimageio test``, bioimageio.core, deepImageJ, ilastik) through its
TensorFlow SavedModel weights, and loads back into emzoo exactly (``emzoo.load("NAME.zip")``) from
the ``config.json`` and ``model.weights.h5`` it carries as attachments (``emzoo.zoo`` reads them).

The package's one input, ``slices``, holds the two neighbouring slices side by side along the
channel axis (``x0`` then ``x1``; axes batch, y, x, channel; float32 in [0, 1]); its output,
``image``, is the slice halfway between them. One input rather than two because bioimageio.core's
TensorFlow 2 and Keras adapters call the model with the input tensors as positional arguments,
which a Keras ``TFSMLayer`` reads as ``(inputs, training)``. ``time`` is not an input: it is 0.5.

Example:
    >>> from emzoo.export.bioimageio import export_bioimageio
    >>> export_bioimageio(emzoo.load("default"), "default.zip")          # doctest: +SKIP
    >>> emzoo.load("default.zip")                                        # doctest: +SKIP
"""

import os
import pathlib
import re
import shutil
import tempfile
import zipfile

import numpy as np

from emzoo.errors import EmzooError, describe

INPUT_ID = "slices"
OUTPUT_ID = "image"
_TEST_SIZE = 192  # test tensors: a 192 x 192 crop of the sample (a multiple of every size multiple)
_SAMPLE_SLICES = (7, 9)  # x0 and x1 from the bundled sample; the true middle is slice 8
# Where an entry's `paper` text names no DOI or link: the architecture's paper.
_ARCHITECTURE_PAPERS = {
    "film": ("F. Reda et al., FILM: Frame Interpolation for Large Motion, ECCV 2022",
             {"url": "https://arxiv.org/abs/2202.04901"}),
    "tsain": ("Z. Wang et al., Temporal Spatial-Adaptive Interpolation with Deformable Refinement "
              "for Electron Microscopic Images, 2021", {"url": "https://arxiv.org/abs/2101.06771"}),
    "ssan": ("Z. Wang et al., Sparse self-attention aggregation networks for neural sequence slice "
             "interpolation, BioData Mining 2021", {"doi": "10.1186/s13040-021-00236-z"}),
    "dan": ("Z. Wang et al., DAN: A Deformation-Aware Network for Consecutive Biomedical Image "
            "Interpolation", {"url": "https://github.com/zejinwang/TSADR"}),
}


def check_ready(path):
    """Refuses, before any work, an output not ending in ``.zip`` or a missing bioimageio.spec."""
    if pathlib.Path(os.fspath(path)).suffix.lower() != ".zip":
        raise EmzooError(describe("A bioimage.io package is a .zip file.", "-o NAME.zip",
                                  output=str(path)))
    try:
        import bioimageio.spec as spec
    except ImportError:
        raise EmzooError(describe("Writing a bioimage.io package needs bioimageio.spec.",
                                  'pip install "emzoo[bioimageio]"', bioimageio_spec=None)) from None
    return spec


def _link(text):
    """The first DOI, arXiv id or GitHub link in a citation text, as CiteEntry fields (or {})."""
    found = re.search(r"doi:\s*(10\.\d{4,9}/[^\s,;]+[^\s,;.)])", text, re.IGNORECASE)
    if found:
        return {"doi": found.group(1)}
    found = re.search(r"arXiv:\s*(\d{4}\.\d{4,5})", text, re.IGNORECASE)
    if found:
        return {"url": f"https://arxiv.org/abs/{found.group(1)}"}
    found = re.search(r"github\.com/[\w.-]+/[\w-]+(?:\.[\w-]+)*", text)
    if found:
        return {"url": f"https://{found.group(0)}"}
    return {}


def citations(entry):
    """CiteEntry dicts: the entry's ``paper`` and its architecture's paper.

    emzoo itself is named in the package's documentation, not cited: the spec wants a DOI or URL
    for every citation, and emzoo has no public address yet.
    """
    paper = (entry.get("metadata") or {}).get("paper") or ""
    arch_text, arch_link = _ARCHITECTURE_PAPERS.get(entry.get("architecture"), (None, None))
    cites = []
    if paper:
        link = _link(paper) or arch_link
        if link:
            cites.append({"text": paper, **link})
    if arch_link and all(arch_link.get(k) != c.get(k) for c in cites for k in arch_link):
        cites.append({"text": arch_text, **arch_link})
    return cites


def spdx_license(text):
    """The first SPDX licence id bioimageio.spec accepts in a free-text licence, or None.

    Example:
        >>> spdx_license("Apache-2.0 (emzoo); trained on FlyEM data (CC BY)")   # doctest: +SKIP
        'Apache-2.0'
    """
    from bioimageio.spec._internal.license_id import LicenseId  # the spec's list of SPDX ids

    for token in re.findall(r"[A-Za-z0-9][A-Za-z0-9.+-]*[A-Za-z0-9+]", text or ""):
        try:
            LicenseId(token)
        except ValueError:
            continue
        return token
    return None


def _sample_pair(channels):
    """x0, x1 and the true middle, (1, S, S, C) float32 in [0, 1], from the bundled sample."""
    import tifffile

    from emzoo.samples import sample_path

    stack = tifffile.imread(sample_path())
    first, second = _SAMPLE_SLICES
    top = (stack.shape[1] - _TEST_SIZE) // 2
    left = (stack.shape[2] - _TEST_SIZE) // 2
    crop = stack[:, top:top + _TEST_SIZE, left:left + _TEST_SIZE].astype(np.float32)
    crop /= float(np.iinfo(stack.dtype).max)

    def as_input(index):
        return np.repeat(crop[index][None, :, :, None], channels, axis=-1)

    return as_input(first), as_input(second)


def _cover(x0, image, x1, path):
    """x0 | prediction | x1 side by side (centre crops, 2:1 as bioimage.io asks), as a grey PNG."""
    from PIL import Image

    height = x0.shape[1]
    width = 2 * height // 3  # three panels: total width = 2 x height
    left = (x0.shape[2] - width) // 2
    panels = [a[0, :, left:left + width, :].mean(axis=-1) for a in (x0, image, x1)]
    picture = np.clip(np.concatenate(panels, axis=1), 0.0, 1.0)
    Image.fromarray((picture * 255.0 + 0.5).astype(np.uint8)).save(path)


def _documentation(name, entry, channels, multiple, package_license):
    meta = entry.get("metadata") or {}
    names = ", ".join(_channel_names(channels))
    grey = "\n  For grey EM, repeat each slice in the three colour channels." if channels == 3 else ""
    trained = meta.get("trained_on") or "not stated"
    if isinstance(trained, (list, tuple)):
        trained = "; ".join(trained)
    return f"""# {name}: z-interpolation of EM slices (emzoo)

{meta.get("description") or f"An emzoo `{entry.get('architecture')}` interpolator."}

## How to call it
- Input `{INPUT_ID}`: two neighbouring slices of a volume, axes (batch, y, x, channel), float32
  scaled to [0, 1] (divide 8-bit data by 255), channels `{names}`: the slice before (`x0`) and
  the slice after (`x1`).{grey}
- Output `{OUTPUT_ID}`: the slice halfway between them, (batch, y, x, {channels}), [0, 1].
- Height and width: any; the model works on multiples of **{multiple}** and pads inside
  (reflection at the bottom and right), cropping the output back. Tiles that are multiples of
  {multiple} avoid the padding.
- Time is ignored: the model returns the midpoint (time 0.5). For x4 or x8 along z, apply it
  recursively (midpoints of midpoints), as `emzoo upscale` does.

Python, with emzoo (the package carries emzoo's own `config.json` and `model.weights.h5`):

    import emzoo
    model = emzoo.load("{name}.zip")
    image = model({{"x0": x0, "x1": x1, "time": t}})["image"]

Whole volumes: `emzoo upscale stack.tif --model {name}.zip --factor 2 -o out.tif`.
With bioimageio.core: `bioimageio test {name}.zip`, or `bioimageio predict`.

## Validation
`test_input.npy` holds slices {_SAMPLE_SLICES[0]} and {_SAMPLE_SLICES[1]} of emzoo's bundled FIB-SEM sample
(a {_TEST_SIZE} x {_TEST_SIZE} centre crop; FlyEM medulla, CC BY) and `test_output.npy` the model's
output for it; the cover shows x0 | output | x1. `emzoo evaluate` scores emzoo models against
linear and cubic interpolation (PSNR, SSIM) on dropped slices of real EM volumes.

## Training data
{trained}

## Licence
{meta.get("license") or package_license} (package licence: {package_license}).

## Citation
{(meta.get("paper") or entry.get("architecture")).rstrip(".")}; and emzoo.
"""


def _channel_names(channels):
    if channels == 1:
        return ["x0", "x1"]
    colours = "rgb" if channels == 3 else [str(i) for i in range(channels)]
    return [f"{which}_{c}" for which in ("x0", "x1") for c in colours]


def _saved_model_with_serve(model, folder):
    """emzoo.export.savedmodel's FILM-compatible module saved with a one-input ``serve`` endpoint.

    ``serve(slices)`` (also the ``serving_default`` signature) returns ``{"image": ...}``; it is
    what bioimageio.core's TensorFlow adapter calls. ``__call__`` stays FILM's dict interface.
    Returns the in-process ``serve`` function (to compute the test outputs with).
    """
    import tensorflow as tf

    from emzoo.export.savedmodel import _FILM_CHANNELS, _specs, build_serving_module

    module, channels = build_serving_module(model)
    for accepted in sorted({channels, _FILM_CHANNELS}):
        module.__call__.get_concrete_function(_specs(tf, accepted), training=False)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 2 * channels], tf.float32,
                                                name=INPUT_ID)])
    def serve(slices):
        time = tf.fill([tf.shape(slices)[0], 1], 0.5)
        outputs = module({"x0": slices[..., :channels], "x1": slices[..., channels:],
                          "time": time}, training=False)
        return {OUTPUT_ID: outputs["image"]}

    module.serve = serve
    tf.saved_model.save(module, str(folder), signatures={"serving_default": serve})
    return serve, channels


def _zip_folder(folder, path):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(pathlib.Path(folder).rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(folder).as_posix())


def export_bioimageio(model, path, overwrite=False, license=None, authors=None):
    """Writes ``model`` as a bioimage.io model package (a ``.zip``) at ``path``.

    Args:
        model: an emzoo interpolator with trained weights, e.g. from :func:`emzoo.load`.
        path: the ``.zip`` to write (written beside under a temporary name, then renamed).
        overwrite: replace an existing file.
        license: SPDX licence id; default: the first one named in the entry's ``license``.
        authors: list of names; default: the entry's ``authors``, else "emzoo contributors".

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Example:
        >>> export_bioimageio(emzoo.load("default"), "default.zip")     # doctest: +SKIP
    """
    spec = check_ready(path)
    import tensorflow as tf
    import tifffile
    from bioimageio.spec.model import v0_5

    from emzoo import zoo

    path = pathlib.Path(os.fspath(path)).expanduser()
    if path.exists() and not overwrite:
        raise EmzooError(describe(f"{path} already exists.", "a new file, or overwrite=True",
                                  path=str(path)))
    entry = dict(getattr(model, "zoo_entry", None) or {})
    entry.setdefault("architecture", getattr(model, "architecture", None))
    meta = entry.get("metadata") or {}
    name = entry.get("name") or path.stem
    package_license = license or spdx_license(meta.get("license"))
    if not package_license:
        raise EmzooError(describe(
            f"The model `{name}` names no licence that bioimage.io accepts.",
            "an SPDX id (e.g. Apache-2.0, MIT, CC-BY-4.0) in its metadata `license`, or license=",
            license=meta.get("license")))
    multiple = int(getattr(model, "size_multiple", 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        serve, channels = _saved_model_with_serve(model, work / "saved_model")
        _zip_folder(work / "saved_model", work / "tf_saved_model.zip")
        zoo.save(model, work / "emzoo", name=name)  # config.json + model.weights.h5: exact reload

        x0, x1 = _sample_pair(channels)
        slices = np.concatenate([x0, x1], axis=-1)
        image = serve(tf.constant(slices))[OUTPUT_ID].numpy().astype(np.float32)
        np.save(work / "test_input.npy", slices)
        np.save(work / "test_output.npy", image)
        tifffile.imwrite(work / "sample_input.tif", slices[0])
        tifffile.imwrite(work / "sample_output.tif", image[0, ..., 0] if channels == 1 else image[0])
        _cover(x0, image, x1, work / "cover.png")
        (work / "README.md").write_text(
            _documentation(name, entry, channels, multiple, package_license), encoding="utf-8")

        space = v0_5.ParameterizedSize(min=multiple, step=multiple)
        same = {a: v0_5.SizeReference(tensor_id=INPUT_ID, axis_id=a) for a in "yx"}
        output_channels = ["image"] if channels == 1 else [
            n.replace("x0", "image") for n in _channel_names(channels)[:channels]]
        data = {"type": "float32", "range": (0.0, 1.0)}
        trained = meta.get("trained_on")
        if isinstance(trained, (list, tuple)):
            trained = "; ".join(trained)
        authors = [{"name": a} for a in (authors or meta.get("authors") or ["emzoo contributors"])]
        cites = citations(entry)
        descr = v0_5.ModelDescr(
            name=re.sub(r"[^\w .,()+-]", " ", f"emzoo {name}")[:128],
            description=(f"Interpolates the slice halfway between two neighbouring EM slices "
                         f"(z-upscaling); emzoo `{entry['architecture']}` model `{name}`."),
            authors=authors,
            cite=cites,
            license=package_license,
            documentation={"source": work / "README.md"},
            covers=[{"source": work / "cover.png"}],
            tags=["electron-microscopy", "interpolation", "z-upscaling", "2d", "tensorflow",
                  "emzoo", str(entry["architecture"])],
            inputs=[v0_5.InputTensorDescr(
                id=INPUT_ID, description="x0 and x1: the slices before and after, along channel",
                axes=[v0_5.BatchAxis()] + [v0_5.SpaceInputAxis(id=a, size=space) for a in "yx"]
                     + [v0_5.ChannelAxis(channel_names=_channel_names(channels))],
                test_tensor={"source": work / "test_input.npy"},
                sample_tensor={"source": work / "sample_input.tif"}, data=data)],
            outputs=[v0_5.OutputTensorDescr(
                id=OUTPUT_ID, description="the slice halfway between x0 and x1",
                axes=[v0_5.BatchAxis()]
                     + [v0_5.SpaceOutputAxis(id=a, size=same[a]) for a in "yx"]
                     + [v0_5.ChannelAxis(channel_names=output_channels)],
                test_tensor={"source": work / "test_output.npy"},
                sample_tensor={"source": work / "sample_output.tif"}, data=data)],
            weights=v0_5.WeightsDescr(tensorflow_saved_model_bundle=(
                v0_5.TensorflowSavedModelBundleWeightsDescr(
                    source=work / "tf_saved_model.zip", tensorflow_version=tf.__version__))),
            attachments=[{"source": work / "emzoo" / zoo._CONFIG_FILE},
                         {"source": work / "emzoo" / zoo._WEIGHTS_FILE}],
            training_data=_training_data(trained, authors, cites) if trained else None,
            config={"emzoo": {"name": name, "architecture": entry["architecture"],
                              "size_multiple": multiple, "channels": channels,
                              "license": meta.get("license"), "time": "ignored (0.5)"}},
        )
        staged = work / "package.zip"
        spec.save_bioimageio_package(descr, output_path=staged)
        os.replace(staged, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


def _training_data(text, authors, cite):
    from bioimageio.spec.dataset.v0_3 import DatasetDescr

    return DatasetDescr(name="training data", description=text[:1024], format_version="0.3.0",
                        authors=authors, cite=cite, tags=["electron-microscopy"])
