"""The C++ library inside the installed package: headers, the static kernel library and
the CMake package that ``python -m fastnn --cmake-dir`` points at, used by examples/cpp
as a separate CMake project would (find_package(fastnn CONFIG) -> fastnn::kernels)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fastnn

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "cpp"
PKG = Path(fastnn.__file__).resolve().parent


def _installed_config():
    found = sorted(PKG.glob("*/cmake/fastnn/fastnnConfig.cmake"))
    return found[0] if found else None


def _fastnn_cli(*args, cwd):
    # The same fastnn as this process imported, whatever the working directory.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PKG.parent)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return subprocess.run([sys.executable, "-m", "fastnn", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _tool(name):
    path = shutil.which(name)
    if path:
        return path
    try:  # the PyPI cmake / ninja packages, when installed in this environment
        mod = __import__(name)
        d = getattr(mod, "CMAKE_BIN_DIR", None) or getattr(mod, "BIN_DIR", None)
        return shutil.which(name, path=d) if d else None
    except ImportError:
        return None


def _cxx_compiler():
    if os.environ.get("CXX"):
        return shutil.which(os.environ["CXX"].split()[0])
    return next(filter(None, (shutil.which(c) for c in ("c++", "g++", "clang++"))), None)


def test_cmake_dir_cli(tmp_path):
    r = _fastnn_cli("--cmake-dir", cwd=tmp_path)
    if _installed_config() is None:
        # A source tree: a clear message on stderr, nothing on stdout, a failing status.
        assert r.returncode == 1, r
        assert r.stdout == ""
        assert "fastnnConfig.cmake" in r.stderr and "pip install" in r.stderr
    else:
        assert r.returncode == 0, r.stderr
        d = Path(r.stdout.strip())
        assert (d / "fastnnConfig.cmake").is_file()
        assert (d / "fastnnConfigVersion.cmake").is_file()
        assert d.resolve() == _installed_config().parent.resolve()
    assert _fastnn_cli("--cmake-dir", "extra", cwd=tmp_path).returncode == 2


def test_example_builds_and_runs_against_installed_package(tmp_path):
    config = _installed_config()
    if config is None:
        pytest.skip(f"fastnn is imported from {PKG}, a source tree without the installed "
                    "C++ library and CMake package (pip install . provides them)")
    if not (EXAMPLE / "CMakeLists.txt").is_file():
        pytest.skip(f"examples/cpp is not next to the tests ({EXAMPLE})")
    cmake = _tool("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    if _cxx_compiler() is None:
        pytest.skip("no C++ compiler (c++, g++, clang++ or $CXX) found")

    # What the wheel holds besides the Python package.
    prefix = config.parents[3]
    assert (prefix / "include" / "fastnn" / "dense.h").is_file()
    assert (prefix / "include" / "fastnn" / "version.h").is_file()
    assert list((prefix / "lib").glob("*fastnn_kernels*"))

    cmake_dir = _fastnn_cli("--cmake-dir", cwd=tmp_path).stdout.strip()
    build = tmp_path / "build"
    configure = [cmake, "-S", str(EXAMPLE), "-B", str(build), f"-Dfastnn_DIR={cmake_dir}",
                 "-DCMAKE_BUILD_TYPE=Release"]
    ninja = _tool("ninja")
    if ninja:
        configure += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
    for cmd in (configure, [cmake, "--build", str(build), "--parallel", "2"]):
        r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout}\n{r.stderr}"

    exe = build / "dense_attention"
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1] == "OK", r.stdout
    assert f"fastnn {fastnn.__version__}" in r.stdout
