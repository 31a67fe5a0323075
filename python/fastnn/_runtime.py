"""Thread count and build facts."""
from __future__ import annotations

from . import _core

_threads_set = [False]  # whether set_num_threads was called (distribute leaves it then)


def set_num_threads(n: int) -> None:
    """Set the number of threads fastnn kernels use (like torch.set_num_threads)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: argument 'n' must be an int, got {type(n).__name__}")
    _core.set_num_threads(n)
    _threads_set[0] = True


def get_num_threads() -> int:
    """Number of threads fastnn kernels use."""
    return _core.num_threads()


def build_info() -> dict:
    """What was built and what runs: version, compiler, flags, OpenMP, SIMD ISA, threads."""
    return {
        "version": _core.__version__,
        "compiler": _core.compiler(),
        "build_type": _core.build_type(),
        "flags": _core.build_flags(),
        "openmp": _core.openmp_enabled(),
        "isa": _core.gemm_isa(),
        "supported_isas": list(_core.supported_isas()),
        "num_threads": _core.num_threads(),
    }
