"""The package ships its apps and zoo configs: checked on a built wheel and on the installed copy."""

import pathlib
import subprocess
import sys
import zipfile

import pytest

import emzoo
from emzoo import zoo

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow   # builds a wheel of the whole checkout
def test_wheel_contains_configs_apps_and_package_data(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("emzoo-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    configs = sorted(p.name for p in (REPO / "zoo_configs").glob("*.json"))
    assert configs, "zoo_configs/ is empty"
    for config in configs:
        assert f"emzoo/zoo_configs/{config}" in names
    assert "emzoo/apps/main.py" in names
    for path in (REPO / "emzoo").rglob("*"):
        if path.parent.name in ("samples", "pretrained") and path.is_file() and "__pycache__" not in str(path):
            assert str(path.relative_to(REPO)) in names, path


def test_installed_copy_finds_its_configs():
    location = pathlib.Path(emzoo.__file__).resolve().parent
    if (location.parent / "setup.py").exists():
        pytest.skip("editable install: the wheel test above covers packaging")
    assert zoo.configs_dir().resolve().parent == location
    shipped = {p.stem for p in zoo.configs_dir().glob("*.json")}
    assert shipped == {p.stem for p in (REPO / "zoo_configs").glob("*.json")}
    assert len(emzoo.list_models()) == len(shipped)
