"""``python -m fastnn``: the command line of fastnn.cli, plus

``python -m fastnn --cmake-dir``  the directory holding fastnnConfig.cmake, for a C++
program's ``cmake -Dfastnn_DIR=...`` (find_package(fastnn CONFIG) -> fastnn::kernels).
"""
import sys
from pathlib import Path


def cmake_dir():
    """The installed package's CMake directory (lib/cmake/fastnn), or None in a source tree."""
    pkg = Path(__file__).resolve().parent
    for d in [pkg / "lib" / "cmake" / "fastnn", *sorted(pkg.glob("*/cmake/fastnn"))]:
        if (d / "fastnnConfig.cmake").is_file():
            return d
    return None


def _print_cmake_dir(extra):
    if extra:
        print(f"python -m fastnn --cmake-dir: takes no arguments, got {' '.join(extra)}",
              file=sys.stderr)
        return 2
    d = cmake_dir()
    if d is None:
        pkg = Path(__file__).resolve().parent
        print(f"fastnn: no CMake package in {pkg} (lib/cmake/fastnn/fastnnConfig.cmake is "
              "missing): this fastnn is a source tree, not an installed wheel. Install it "
              "with 'pip install .', or for the C++ library alone run 'cmake -S . -B build "
              "&& cmake --install build --prefix DIR' and pass "
              "-Dfastnn_DIR=DIR/lib/cmake/fastnn.", file=sys.stderr)
        return 1
    print(d)
    return 0


def _main(argv):
    if argv and argv[0] == "--cmake-dir":
        return _print_cmake_dir(argv[1:])
    from .cli import main

    return main(argv)


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
