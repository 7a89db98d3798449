"""``emzoo list``: each entry's weights source comes from emzoo.weights, not from the app."""

from app_runner import run_emzoo


def _sources(done):
    rows = [line.split() for line in done.stdout.splitlines()[1:] if line.strip()]
    return {row[0]: row[3] for row in rows}


def test_list_reports_where_weights_come_from(tmp_path):
    done = run_emzoo(["list"], cwd=tmp_path, EMZOO_HOME=str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr
    sources = _sources(done)
    assert sources["default"] == "bundled"
    for name in ("film-vimeo", "film-l1", "film-vgg", "film-sc-em", "film-ft-em"):
        assert sources[name] == "convert", (name, sources[name])   # they were "bundled" before
    for name in ("film", "tsain", "ssan", "dan"):
        assert sources[name] == "none", (name, sources[name])


def test_list_reports_converted_weights_as_cached(tmp_path):
    cache = tmp_path / "cache"
    (cache / "film-l1").mkdir(parents=True)
    (cache / "film-l1" / "model.weights.h5").write_bytes(b"stand-in")
    done = run_emzoo(["list", "film-l1"], cwd=tmp_path, EMZOO_HOME=str(cache))
    assert done.returncode == 0, done.stderr
    assert _sources(done) == {"film-l1": "cached"}


def test_long_listing_shows_training_data_licence_weights_and_convert_command(tmp_path):
    done = run_emzoo(["list", "--long"], cwd=tmp_path, EMZOO_HOME=str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr
    blocks, name = {}, None
    for line in done.stdout.splitlines()[1:]:
        if line.startswith("      "):  # a wrapped detail goes on
            blocks[name][label] += " " + line.strip()
        elif line.startswith("    "):
            label, _, text = line.strip().partition(": ")
            blocks[name][label] = text
        elif line.strip():
            name = line.split()[0]
            blocks[name] = {}
    assert set(blocks["default"]) >= {"paper", "trained on", "licence", "weights"}
    assert "FIB-SEM" in blocks["default"]["trained on"] and "CC BY" in blocks["default"]["licence"]
    assert blocks["default"]["weights"].startswith("bundled")
    vimeo = blocks["film-vimeo"]
    assert "Vimeo-90K" in vimeo["trained on"] and "Apache-2.0" in vimeo["licence"]
    assert "frame-interpolation" in vimeo["weights"]
    assert vimeo["convert"] == ("emzoo convert film /path/to/film_net/Style/saved_model "
                                "--name film-vimeo")
    assert blocks["tsain"]["weights"].startswith("none")
    assert "emzoo train tsain" in blocks["tsain"]["weights"]
    assert "convert" not in blocks["tsain"]


def test_several_patterns_list_every_match_and_rows_fit_100_columns(tmp_path):
    done = run_emzoo(["list", "default", "tsain"], cwd=tmp_path, EMZOO_HOME=str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr
    assert list(_sources(done)) == ["default", "tsain"]
    for args in (["list"], ["list", "--long"]):
        done = run_emzoo(args, cwd=tmp_path, EMZOO_HOME=str(tmp_path / "cache"))
        assert done.returncode == 0, done.stderr
        assert max(len(line) for line in done.stdout.splitlines()) <= 100


def test_flow_is_listed_as_a_model_without_weights(tmp_path):
    done = run_emzoo(["list", "fl*"], cwd=tmp_path, EMZOO_HOME=str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr
    assert _sources(done) == {"flow": "none"}  # "none needed"
    done = run_emzoo(["list", "fl*", "--long"], cwd=tmp_path, EMZOO_HOME=str(tmp_path / "cache"))
    assert "emzoo[flow]" in done.stdout and "description: Optical-flow baseline" in done.stdout
