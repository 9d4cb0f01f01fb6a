"""Packaging: the npe2 manifest, the headless modules, and the benchmark script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_manifest_is_found_and_valid():
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_distribution("napari-noise2fast")
    assert manifest.name == "napari-noise2fast"
    for command in manifest.contributions.commands:
        assert callable(command.exec) or command.python_name  # resolvable entry
    result = subprocess.run(["npe2", "validate", "napari-noise2fast"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_root_manifest_is_the_packaged_one():
    root = ROOT / "napari.yaml"
    assert root.is_symlink()
    assert root.resolve() == (ROOT / "src" / "napari_noise2fast" / "napari.yaml").resolve()


def test_engine_api_and_cli_import_no_gui():
    code = (
        "import sys, napari_noise2fast, napari_noise2fast.cli, napari_noise2fast.methods, napari_noise2fast.layers,"
        " napari_noise2fast.preview, napari_noise2fast.samples, napari_noise2fast._qt.context_menu;"
        "bad = [m for m in sys.modules if m.split('.')[0] in {'napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2',"
        " 'PySide6', 'magicgui', 'vispy'}];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_benchmark_script_prints_table(capsys, data_dir):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import run_benchmark
    finally:
        sys.path.pop(0)
    assert run_benchmark.main(["--data", str(data_dir), "--images", "01", "--max-steps", "2", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "| 01 | 0 | 256x256 | 20.18 |" in out and "median over 1 runs" in out


def test_the_public_names_stay_the_functions_after_every_module_is_imported():
    # a module named like a public function (compare.py once) replaced the function once it was imported
    code = """
import importlib, pkgutil
import napari_noise2fast as package
for module in pkgutil.walk_packages(package.__path__, "napari_noise2fast."):
    if "._qt" not in module.name:
        importlib.import_module(module.name)
for name in ("compare", "denoise", "iter_denoise", "iter_compare"):
    assert callable(getattr(package, name)) and not hasattr(getattr(package, name), "__path__"), name
    assert not isinstance(getattr(package, name), type(package)), name
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    names = {path.stem for path in (ROOT / "src" / "napari_noise2fast").glob("*.py")}
    import napari_noise2fast

    assert not names & set(napari_noise2fast._PUBLIC)  # no module shares a public function's name
