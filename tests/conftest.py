"""Shared test helpers: a seeded random generator, the tolerance rule, thread control."""
from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

import fastnn

EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture
def rng(request):
    """numpy Generator seeded from the test's id: reproducible, different per test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def _tol(K, c=4.0):
    """Relative tolerance for a float32 result summed over K terms: c * eps32 * sqrt(K)."""
    return c * EPS32 * math.sqrt(max(int(K), 1))


@pytest.fixture
def tol():
    """tol(K, c=4.0) -> c * eps32 * sqrt(K), the tolerance for a length-K reduction."""
    return _tol


@pytest.fixture
def num_threads():
    """fastnn.set_num_threads, with the thread count restored after the test."""
    before = fastnn.get_num_threads()
    yield fastnn.set_num_threads
    fastnn.set_num_threads(before)


@pytest.fixture(params=list(fastnn._core.supported_isas()))
def isa(request):
    """Runs a test once per ISA this CPU supports (the GEMM, the int8/sparse kernels and the
    optimizer passes follow fastnn._core.set_gemm_isa), restoring the choice after."""
    before = fastnn._core.gemm_isa()
    fastnn._core.set_gemm_isa(request.param)
    yield request.param
    fastnn._core.set_gemm_isa(before)
