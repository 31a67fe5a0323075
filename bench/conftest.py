"""pytest-benchmark setup shared by every bench/test_*_bench.py.

- Thread count: FASTNN_BENCH_THREADS (default 2) is pinned at session start for fastnn,
  torch and NumPy's BLAS, and shown in the report header.
- Machine info: fastnn.build_info(), the torch and NumPy versions and the pinned thread
  counts go into the benchmark JSON (``--benchmark-json``/``--benchmark-autosave``)
  under ``machine_info``.
- ``impl``: a test that takes an ``impl`` argument and does not parametrise it itself
  runs once per implementation, in the order numpy, fastnn, torch; torch is skipped
  when it is not importable. ``--impls numpy,fastnn`` restricts the set.
"""
from __future__ import annotations

import os

import pytest

import _common

IMPLS = ("numpy", "fastnn", "torch")


def bench_threads() -> int:
    return int(os.environ.get("FASTNN_BENCH_THREADS", "2"))


def pytest_addoption(parser):
    parser.addoption("--impls", default=",".join(IMPLS),
                     help="comma-separated implementations to benchmark "
                          f"(default: {','.join(IMPLS)})")


def _selected(config):
    sel = [s.strip() for s in config.getoption("--impls", default=",".join(IMPLS)).split(",") if s.strip()]
    bad = [s for s in sel if s not in IMPLS]
    if bad:
        raise pytest.UsageError(f"--impls: unknown {bad}; choose from {','.join(IMPLS)}")
    return sel


def pytest_configure(config):
    sel = _selected(config)
    config._fastnn_bench_threads = _common.pin_threads(
        bench_threads(), fastnn=True, torch="torch" in sel)


def pytest_report_header(config):
    lines = [f"bench threads (FASTNN_BENCH_THREADS): {bench_threads()}; pinned: "
             f"{getattr(config, '_fastnn_bench_threads', {})}"]
    info = _fastnn_build_info()
    if info:
        lines.append(f"fastnn build_info: {info}")
    return lines


def _fastnn_build_info():
    if not _common.have_module("fastnn"):
        return None
    import fastnn
    return fastnn.build_info()


def pytest_benchmark_update_machine_info(config, machine_info):
    import numpy

    machine_info["fastnn_build_info"] = _fastnn_build_info()
    machine_info["numpy_version"] = numpy.__version__
    machine_info["numpy_blas_threads"] = _common.blas_threads()
    machine_info["bench_threads"] = bench_threads()
    if "torch" in _selected(config) and _common.have_module("torch"):
        import torch
        machine_info["torch_version"] = torch.__version__
        machine_info["torch_threads"] = torch.get_num_threads()
    else:
        machine_info["torch_version"] = None


def impl_params(config=None):
    """pytest.param for each implementation; torch skipped when not importable."""
    sel = _selected(config) if config is not None else list(IMPLS)
    out = []
    for name in IMPLS:
        marks = []
        if name not in sel:
            marks.append(pytest.mark.skip(reason=f"{name} not in --impls"))
        elif name == "torch" and not _common.have_module("torch"):
            marks.append(pytest.mark.skip(reason="torch is not installed"))
        out.append(pytest.param(name, id=name, marks=marks))
    return out


def _parametrises(metafunc, argname):
    for m in metafunc.definition.iter_markers("parametrize"):
        names = m.args[0] if m.args else m.kwargs.get("argnames", "")
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")]
        if argname in names:
            return True
    return False


def pytest_generate_tests(metafunc):
    if "impl" in metafunc.fixturenames and not _parametrises(metafunc, "impl"):
        metafunc.parametrize("impl", impl_params(metafunc.config))
