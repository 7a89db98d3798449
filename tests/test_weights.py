"""Weights resolution: explicit file, cache, download from a local HTTP server, sha256, offline."""

import hashlib
import http.server
import threading

import pytest

from emzoo import weights
from emzoo.errors import WeightsError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` (path -> bytes) with HTTP Range support; counts requests."""

    files = {}
    requests = []

    def do_GET(self):  # noqa: N802 (http.server naming)
        type(self).requests.append((self.path, self.headers.get("Range")))
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        header = self.headers.get("Range")
        if header and header.startswith("bytes="):
            start = int(header[6:].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _RangeHandler.files = {"/good.weights.h5": PAYLOAD, "/bad.weights.h5": PAYLOAD[:-1] + b"x"}
    _RangeHandler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_download_verifies_and_caches(server, emzoo_home):
    spec = {"url": server + "/good.weights.h5", "sha256": SHA}
    path = weights.resolve(spec, "tiny")
    assert path == emzoo_home / "tiny" / "good.weights.h5"
    assert path.read_bytes() == PAYLOAD
    # Second resolution comes from the cache, without a request.
    count = len(_RangeHandler.requests)
    assert weights.resolve(spec, "tiny") == path
    assert len(_RangeHandler.requests) == count


def test_corrupted_download_is_rejected_and_not_cached(server, emzoo_home):
    spec = {"url": server + "/bad.weights.h5", "sha256": SHA}
    with pytest.raises(WeightsError, match="corrupt"):
        weights.resolve(spec, "tiny")
    assert not list((emzoo_home / "tiny").glob("*")), "nothing may stay in the cache"


def test_partial_download_is_resumed_with_range(server, emzoo_home):
    dest = emzoo_home / "tiny" / "good.weights.h5"
    dest.parent.mkdir(parents=True)
    (dest.parent / "good.weights.h5.part").write_bytes(PAYLOAD[:1000])
    path = weights.resolve({"url": server + "/good.weights.h5", "sha256": SHA}, "tiny")
    assert path.read_bytes() == PAYLOAD
    assert _RangeHandler.requests[-1][1] == "bytes=1000-"


def test_missing_url_is_a_clear_error(server, emzoo_home):
    with pytest.raises(WeightsError, match="404|failed"):
        weights.resolve({"url": server + "/nothing.weights.h5", "sha256": SHA}, "tiny")
    assert not (emzoo_home / "tiny" / "nothing.weights.h5").exists()


def test_offline_never_touches_network(server, emzoo_home, monkeypatch):
    monkeypatch.setenv("EMZOO_OFFLINE", "1")
    with pytest.raises(WeightsError) as info:
        weights.resolve({"url": server + "/good.weights.h5", "sha256": SHA}, "tiny")
    assert str(emzoo_home / "tiny" / "good.weights.h5") in str(info.value)
    assert _RangeHandler.requests == []


def test_corrupted_cache_file_is_reported(emzoo_home):
    cached = emzoo_home / "tiny" / "good.weights.h5"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the weights")
    with pytest.raises(WeightsError, match="checksum"):
        weights.resolve({"url": "http://127.0.0.1:9/good.weights.h5", "sha256": SHA}, "tiny")


def test_explicit_file_and_package_file(tmp_path, emzoo_home):
    local = tmp_path / "w.weights.h5"
    local.write_bytes(PAYLOAD)
    assert weights.resolve({"file": "w.weights.h5", "sha256": SHA}, "x", base_dir=tmp_path) == local
    with pytest.raises(WeightsError, match="checksum"):
        weights.resolve({"file": "w.weights.h5", "sha256": "0" * 64}, "x", base_dir=tmp_path)


def test_entry_without_url_says_how_to_install(emzoo_home):
    spec = {"format": "film_saved_model", "source": "https://example.org/film",
            "convert_command": "emzoo convert film DIR --name film-x"}
    with pytest.raises(WeightsError) as info:
        weights.resolve(spec, "film-x")
    message = str(info.value)
    assert "emzoo convert film DIR --name film-x" in message
    assert str(emzoo_home / "film-x" / "model.weights.h5") in message


def test_guess_format(tmp_path):
    assert weights.guess_format(tmp_path) == "film_saved_model"
    assert weights.guess_format(tmp_path / "a.weights.h5") == "keras"
    with pytest.raises(WeightsError, match="Received"):
        weights.guess_format(tmp_path / "a.pkl")


def test_source_names_where_an_entry_s_weights_come_from(emzoo_home, tmp_path):
    assert weights.source(None) == "none"
    assert weights.source({"format": "film_saved_model", "file": None, "sha256": None}) == "convert"
    assert weights.source({"url": "http://127.0.0.1/x.weights.h5", "sha256": "0"}) == "download"
    assert weights.source({"file": "emzoo:pretrained/default.weights.h5"}) == "bundled"
    (tmp_path / "w.weights.h5").write_bytes(b"x")
    assert weights.source({"file": "w.weights.h5"}, base_dir=tmp_path) == "bundled"
    assert weights.source({"file": "missing.weights.h5", "format": "keras"}, base_dir=tmp_path) == "none"
    (emzoo_home / "conv").mkdir(parents=True)
    (emzoo_home / "conv" / "model.weights.h5").write_bytes(b"x")
    assert weights.source({"format": "film_saved_model", "file": None}, name="conv") == "cached"
