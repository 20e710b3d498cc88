"""The package installs as `rationanomaly.*` and nothing else.

The three rooms live at the top of the repository as stream/, model/ and training/, and
pyproject.toml maps them under the `rationanomaly` namespace. A mapping mistake shows only
outside the repository (inside it, the folders import as themselves from the working
directory), and it would install top-level `stream`/`model`/`training` packages that shadow a
user's own modules. So: build the wheel, install it into a fresh interpreter environment, and
import from a folder that is not the repository.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUBPACKAGES = ("rationanomaly.stream", "rationanomaly.model", "rationanomaly.model.backends",
               "rationanomaly.training", "rationanomaly.cli")
FORBIDDEN_TOP_LEVEL = ("stream", "model", "training", "cli")

# Run in a fresh interpreter: imports each package and reports where it came from, and whether
# any bare top-level name is importable.
PROBE = f"""
import importlib, importlib.util, json, sys
out = {{"files": {{}}, "top_level": {{}}}}
for name in {SUBPACKAGES!r}:
    module = importlib.import_module(name)
    out["files"][name] = module.__file__ or list(module.__path__)[0]
for name in {FORBIDDEN_TOP_LEVEL!r}:
    spec = importlib.util.find_spec(name)
    out["top_level"][name] = None if spec is None else (spec.origin or str(list(spec.submodule_search_locations or [])))
print(json.dumps(out))
"""


def _run(cmd: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kwargs)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _probe(python: str, cwd: Path) -> dict:
    return json.loads(_run([python, "-I", "-c", PROBE], cwd=cwd).stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: the test venv already has setuptools, and an isolated build would
    # fetch it from the index on every run.
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
         cwd=out, timeout=300)
    wheels = list(out.glob("rationanomaly-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_holds_only_the_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"rationanomaly", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, top
    for package in SUBPACKAGES:
        assert package.replace(".", "/") + "/__init__.py" in names, package
    # The console script points into the namespace.
    dist_info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(dist_info).decode()
    assert "rationanomaly = rationanomaly.cli.main:main" in entry_points


def test_installed_wheel_imports_from_outside_the_repository(wheel, tmp_path):
    # A fresh venv with the wheel installed into its own site-packages. The test venv's
    # site-packages is appended with a .pth line for the dependencies (pydantic, confluent_kafka,
    # ...): a path added that way is not scanned for .pth files itself, so the editable
    # install's import hook living there stays out and cannot mask a broken wheel.
    env = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env)], cwd=tmp_path, timeout=120)
    python = env / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path).stdout.strip())
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
         cwd=tmp_path, timeout=300)
    (site / "zz_test_venv_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    found = _probe(str(python), outside)
    for name, path in found["files"].items():
        assert Path(path).resolve().is_relative_to(site.resolve()), f"{name} came from {path}, not the installed wheel"
    assert found["top_level"] == dict.fromkeys(FORBIDDEN_TOP_LEVEL), found["top_level"]


def test_editable_install_imports_the_working_tree(tmp_path):
    # The venv the tests run in has the package installed editable (make venv): the same names
    # resolve to the repository's folders, and again no bare top-level package appears.
    found = _probe(sys.executable, tmp_path)
    for name, path in found["files"].items():
        assert Path(path).resolve().is_relative_to(REPO), f"{name} came from {path}, not {REPO}"
    assert found["top_level"] == dict.fromkeys(FORBIDDEN_TOP_LEVEL), found["top_level"]
