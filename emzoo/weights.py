"""Resolving, downloading, verifying and caching model weights.

Weights of a named entry are found in this order:

1. an explicit path (``emzoo.load(name, weights="path")``), or the entry's ``"file"``
   (relative to its JSON file, or ``"emzoo:pretrained/x.weights.h5"`` inside the installed package);
2. the cache, ``$EMZOO_HOME`` (default ``~/.cache/emzoo``): ``<cache>/<name>/<file name>``, where
   ``emzoo convert`` also installs converted FILM weights as ``<cache>/<name>/model.weights.h5``;
3. a download of the entry's ``"url"`` over HTTP(S): streamed to ``<file>.part`` (resumed with an HTTP
   Range request when a partial file is there), checked against ``"sha256"``, then renamed into the
   cache. A file that fails the check is deleted, never cached.

With ``EMZOO_OFFLINE=1`` the network is never touched and the error says which file was expected where.
Formats: Keras ``.weights.h5`` and original FILM SavedModel folders (converted by variable name).
Nothing is ever unpickled.

Example:
    >>> from emzoo import weights
    >>> path = weights.resolve({"url": "https://example.org/m.weights.h5", "sha256": "..."},
    ...                        "my-model")      # doctest: +SKIP
"""

import hashlib
import os
import pathlib
import shutil
import sys
import urllib.error
import urllib.request

from emzoo.errors import WeightsError, describe, one_line

CONVERTED_FILE = "model.weights.h5"
_PACKAGE_PREFIX = "emzoo:"


def cache_dir():
    """The weights cache: ``$EMZOO_HOME`` or ``~/.cache/emzoo``."""
    return pathlib.Path(os.environ.get("EMZOO_HOME") or "~/.cache/emzoo").expanduser()


def offline():
    """True when ``EMZOO_OFFLINE`` is set to 1/true/yes: never touch the network."""
    return os.environ.get("EMZOO_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def sha256_of(path):
    """Hex sha256 of a file."""
    return file_digest(path, "sha256")


def file_digest(path, algorithm):
    """Hex digest of a file with a ``hashlib`` algorithm (``"sha256"``, ``"md5"``), in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _package_path(relative):
    return pathlib.Path(__file__).resolve().parent / relative


def _file_name(spec):
    if spec.get("url"):
        return spec["url"].rstrip("/").rsplit("/", 1)[-1].split("?")[0]
    return CONVERTED_FILE


def _verify(path, sha256, what):
    if sha256 and path.is_file():
        actual = sha256_of(path)
        if actual != sha256:
            raise WeightsError(describe(
                f"The weights file {path} ({what}) does not match its checksum.",
                f"sha256 {sha256}", sha256=actual))


def resolve(spec, name, base_dir=None):
    """Returns a local path for the weights ``spec`` of the entry ``name``.

    Args:
        spec: the entry's ``"weights"`` dict (``file`` and/or ``url``, ``sha256``, ``format``,
            optionally ``source`` and ``convert_command`` shown when the weights are missing).
        name: the entry's name (the cache sub-folder).
        base_dir: folder a relative ``file`` is relative to (the entry's folder).
    """
    sha256 = spec.get("sha256")
    file = spec.get("file")
    if file:
        if file.startswith(_PACKAGE_PREFIX):
            path = _package_path(file[len(_PACKAGE_PREFIX):])
        else:
            path = pathlib.Path(base_dir or ".") / file
        if path.exists():
            _verify(path, sha256, f"bundled with `{name}`")
            return path
    cached = cache_dir() / name / _file_name(spec)
    converted = cache_dir() / name / CONVERTED_FILE
    if cached.exists():
        _verify(cached, sha256 if spec.get("url") else None, f"cached for `{name}`")
        return cached
    if converted.exists():
        return converted
    url = spec.get("url")
    if not url:
        how = spec.get("convert_command")
        source = spec.get("source")
        hint = ""
        if source:
            hint += f" Get them from {source}"
        if how:
            hint += f" and install them with `{how}`"
        raise WeightsError(describe(
            f"No weights for `{name}` on this machine.{hint}.",
            f"a converted weights file at {converted}, or an explicit path in "
            f"emzoo.load({name!r}, weights=PATH)", name=name))
    if offline():
        raise WeightsError(describe(
            f"The weights of `{name}` are not in the cache and EMZOO_OFFLINE is set, so they were "
            f"not downloaded from {url}.",
            f"the file {cached} (copy it there, or unset EMZOO_OFFLINE)", name=name))
    return download(url, sha256, cached)


def source(spec, name=None, base_dir=None):
    """Where an entry's weights come from, as one word for listings.

    ``"bundled"`` (a file shipped with emzoo or beside a saved folder), ``"cached"`` (already in
    ``$EMZOO_HOME``, e.g. converted), ``"download"`` (a URL, fetched on first use), ``"convert"``
    (foreign weights the user converts with ``emzoo convert``), or ``"none"`` (no trained weights).

    Example:
        >>> source({"format": "film_saved_model", "file": None, "sha256": None})
        'convert'
        >>> source(None)
        'none'
    """
    if not spec:
        return "none"
    file = spec.get("file")
    if file:
        path = (_package_path(file[len(_PACKAGE_PREFIX):]) if file.startswith(_PACKAGE_PREFIX)
                else pathlib.Path(base_dir or ".") / file)
        if path.exists():
            return "bundled"
    if name and ((cache_dir() / name / _file_name(spec)).exists()
                 or (cache_dir() / name / CONVERTED_FILE).exists()):
        return "cached"
    if spec.get("url"):
        return "download"
    if spec.get("format") == "film_saved_model" or spec.get("convert_command"):
        return "convert"
    return "none"


def download(url, sha256, dest, progress=True):
    """Downloads ``url`` to ``dest`` atomically; resumes a partial ``dest.part``; checks sha256.

    The file appears at ``dest`` only after its checksum matched; a mismatching file is deleted.
    """
    dest = pathlib.Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "emzoo"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            if offset and response.status != 206:  # server ignored the Range: start again
                offset = 0
            total = response.headers.get("Content-Length")
            total = int(total) + offset if total else None
            with open(part, "ab" if offset else "wb") as out:
                done = offset
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    done += len(block)
                    if progress and total and sys.stderr.isatty():
                        print(f"\rdownloading {dest.name}: {100 * done // total}%", end="",
                              file=sys.stderr)
    except (urllib.error.URLError, OSError) as error:
        raise WeightsError(describe(f"Downloading {url} failed: {error}.",
                                    "a reachable URL (or set EMZOO_OFFLINE=1 and place the file "
                                    f"at {dest})", url=url)) from None
    if sha256:
        actual = sha256_of(part)
        if actual != sha256:
            part.unlink()
            raise WeightsError(describe(
                f"The file downloaded from {url} is corrupt or not the expected one; it was deleted.",
                f"sha256 {sha256}", sha256=actual))
    os.replace(part, dest)
    return dest


def guess_format(path):
    """``"film_saved_model"`` for a folder, ``"keras"`` for a ``.weights.h5`` file."""
    path = pathlib.Path(path)
    if path.is_dir():
        return "film_saved_model"
    if path.name.endswith(".h5"):
        return "keras"
    raise WeightsError(describe(f"Unrecognised weights file {path}.",
                                "a .weights.h5 file or an original FILM SavedModel folder",
                                weights=str(path)))


def load_into(model, path, fmt=None, entry=None):
    """Loads the weights at ``path`` into the built ``model``."""
    path = pathlib.Path(path)
    fmt = fmt or guess_format(path)
    if fmt != "keras":  # the architecture reads its own foreign checkpoints (FILM SavedModels)
        return model.load_weights_file(path, fmt)
    try:
        model.load_weights(str(path))
    except (ValueError, OSError, KeyError) as error:
        name = (entry or {}).get("name", model.name)
        message = one_line(error, 400)
        raise WeightsError(describe(
            f"The weights in {path} do not fit `{name}` ({message}).",
            "a .weights.h5 file saved from the same architecture and configuration",
            weights=str(path))) from None
    return model


def install(src, name, filename=CONVERTED_FILE):
    """Copies a weights file into the cache as ``<cache>/<name>/<filename>`` (atomically)."""
    dest = cache_dir() / name / filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    from emzoo.atomic import atomic_path

    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return dest
