"""Int8 LSTM and GRU: the C++ kernels against their NumPy twins (int32 products and the
dequantized step products bit for bit, outputs within float rounding), the quantized
layers against the float ones (within int8 error), Bidirectional, masks, states, saving
and loading, thread-count independence, and bad input."""
import numpy as np
import pytest

import fastnn as fn
from fastnn import _core
from fastnn.ops.quant import pack_qweight
from fastnn.reference import qrecurrent as qref
from fastnn.reference.quant import quantize_weight

L = fn.layers
KINDS = ["lstm", "gru", "gru_before"]  # gru: reset_after (Keras default); gru_before: original


def _gates(kind):
    return 4 if kind == "lstm" else 3


def _setup(rng, kind, N, T, C, U, bias=True, h0=False, mask=False):
    G = _gates(kind) * U
    W = (rng.normal(size=(C, G)) / np.sqrt(C)).astype(np.float32)
    R = (rng.normal(size=(U, G)) / np.sqrt(U)).astype(np.float32)
    b = None
    if bias:
        shape = (2, G) if kind == "gru" else (G,)
        b = rng.normal(scale=0.3, size=shape).astype(np.float32)
    x = rng.normal(size=(N, T, C)).astype(np.float32)
    wq, rq = quantize_weight(W), quantize_weight(R)
    hs = [rng.uniform(-1, 1, size=(N, U)).astype(np.float32) for _ in range(2)] if h0 else [None, None]
    m = None
    if mask:
        m = (rng.random((N, T)) < 0.7).astype(np.uint8)
        m[0, :] = 1
        m[-1, -1] = 0
    return dict(x=x, W=W, R=R, b=b, wq=wq, rq=rq, h0=hs[0], c0=hs[1], mask=m)


def _run_cpp(kind, d, reverse, xs=None, xz=0, hs=None, hz=0, record=True):
    x, (wq, ws), (rq, rs) = d["x"], d["wq"], d["rq"]
    N, T, _ = x.shape
    U = rq.shape[0]
    G = _gates(kind) * U
    Wp = pack_qweight(wq, ws)
    y = np.empty((N, T, U), np.float32)
    xa = np.empty((N, T, G), np.float32)
    ra = np.empty((N, T, G), np.float32) if record else None
    if kind == "lstm":
        c = np.empty((N, T, U), np.float32)
        Rp = pack_qweight(rq, rs)
        _core.qlstm_forward(y, c, xa, ra, x, d["h0"], d["c0"], d["mask"], Wp.packed, Wp.scale,
                            Rp.packed, Rp.scale, d["b"], xs, xz, hs, hz, reverse)
        return dict(y=y, c=c, xa=xa, ra=ra)
    if kind == "gru":
        Rp = pack_qweight(rq, rs)
        _core.qgru_forward(y, xa, ra, None, x, d["h0"], d["mask"], Wp.packed, Wp.scale,
                           Rp.packed, Rp.scale, None, None, d["b"], xs, xz, hs, hz, reverse,
                           True)
        return dict(y=y, xa=xa, ra=ra)
    hn = np.empty((N, T, U), np.float32) if record else None
    Rzr = pack_qweight(np.ascontiguousarray(rq[:, :2 * U]), rs[:2 * U].copy())
    Rh = pack_qweight(np.ascontiguousarray(rq[:, 2 * U:]), rs[2 * U:].copy())
    _core.qgru_forward(y, xa, ra, hn, x, d["h0"], d["mask"], Wp.packed, Wp.scale, Rzr.packed,
                       Rzr.scale, Rh.packed, Rh.scale, d["b"], xs, xz, hs, hz, reverse, False)
    return dict(y=y, xa=xa, ra=ra, hn=hn)


def _run_twin(kind, d, reverse, xs=None, xz=0, hs=None, hz=0, replay=None):
    q = dict(x_scale=xs, x_zero_point=xz, h_scale=hs, h_zero_point=hz)
    if kind == "lstm":
        y, c, xa, ra = qref.qlstm(d["x"], d["wq"], d["rq"], d["b"], d["h0"], d["c0"], d["mask"],
                                  reverse, h_replay=None if replay is None else replay["y"], **q)
        return dict(y=y, c=c, xa=xa, ra=ra)
    y, xa, ra, hn = qref.qgru(d["x"], d["wq"], d["rq"], d["b"], d["h0"], d["mask"], reverse,
                              kind == "gru", h_replay=None if replay is None else replay["y"],
                              hn_replay=None if replay is None else replay.get("hn"), **q)
    out = dict(y=y, xa=xa, ra=ra)
    if kind == "gru_before":
        out["hn"] = hn
    return out


SHAPES = [(1, 1, 3, 1), (1, 4, 5, 7), (3, 5, 7, 7), (5, 3, 4, 65), (2, 6, 1, 1)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reverse", [False, True])
def test_kernel_is_its_twin(rng, kind, shape, reverse):
    N, T, C, U = shape
    d = _setup(rng, kind, N, T, C, U, bias=True, h0=N > 1, mask=N > 2)
    got = _run_cpp(kind, d, reverse)
    # Replaying the kernel's own h_prev (and r ⊙ h_prev): every int32 product and its
    # dequantized result is the twin's bit for bit.
    rep = _run_twin(kind, d, reverse, replay=got)
    np.testing.assert_array_equal(got["xa"], rep["xa"])
    np.testing.assert_array_equal(got["ra"], rep["ra"])
    # Free-running: the gates' exp/tanh differ by a few ulp, which can move h_prev across a
    # quantization step now and then; the outputs stay within a fraction of one step.
    free = _run_twin(kind, d, reverse)
    tol = 2e-5 if T == 1 else 5e-3
    np.testing.assert_allclose(got["y"], free["y"], atol=tol, rtol=0)
    if kind == "lstm":
        np.testing.assert_allclose(got["c"], free["c"], atol=2 * tol, rtol=0)
    if kind == "gru_before":
        np.testing.assert_allclose(got["hn"], free["hn"], atol=tol, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_static_kernel_is_its_twin(rng, kind):
    d = _setup(rng, kind, 4, 6, 5, 9, bias=True, h0=True, mask=True)
    xs, xz, hs, hz = 0.021, 131, 2.0 / 255, 128
    got = _run_cpp(kind, d, False, xs, xz, hs, hz)
    rep = _run_twin(kind, d, False, xs, xz, hs, hz, replay=got)
    np.testing.assert_array_equal(got["xa"], rep["xa"])
    np.testing.assert_array_equal(got["ra"], rep["ra"])
    free = _run_twin(kind, d, False, xs, xz, hs, hz)
    np.testing.assert_allclose(got["y"], free["y"], atol=5e-3, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_no_bias_and_no_record(rng, kind):
    d = _setup(rng, kind, 3, 4, 6, 5, bias=False)
    got = _run_cpp(kind, d, False, record=False)
    free = _run_twin(kind, d, False)
    np.testing.assert_allclose(got["y"], free["y"], atol=5e-3, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_kernel_is_close_to_the_float_reference(rng, kind):
    """The int8 recurrence stays near the float32 one (the twins' float kernels)."""
    from fastnn import reference as R
    d = _setup(rng, kind, 8, 12, 16, 32, bias=True, mask=True)
    got = _run_cpp(kind, d, False, record=False)
    if kind == "lstm":
        want = R.lstm(d["x"], d["W"], d["R"], d["b"], mask=d["mask"])[0]
    else:
        want = R.gru(d["x"], d["W"], d["R"], d["b"], mask=d["mask"], reset_after=kind == "gru")[0]
    err = np.abs(got["y"] - want).max()
    assert 0 < err < 0.05


def test_kernel_threads_do_not_change_results(rng):
    d = _setup(rng, "lstm", 64, 5, 32, 40, mask=True)
    before = fn.get_num_threads() if hasattr(fn, "get_num_threads") else _core.num_threads()
    try:
        outs = []
        for n in (1, 2):
            fn.set_num_threads(n)
            outs.append(_run_cpp("lstm", d, False))
            outs.append(_run_cpp("gru_before", _setup(np.random.default_rng(1), "gru_before",
                                                      64, 5, 32, 40), True))
    finally:
        fn.set_num_threads(before)
    for k in ("y", "ra"):
        np.testing.assert_array_equal(outs[0][k], outs[2][k])
        np.testing.assert_array_equal(outs[1][k], outs[3][k])


# ---- layers -----------------------------------------------------------------------

def _rnn(kind, units, **kw):
    if kind == "lstm":
        return L.LSTM(units, **kw)
    return L.GRU(units, reset_after=kind == "gru", **kw)


def _seq_model(kind, bidir=False, mask=False, return_sequences=False, units=12, seed=0):
    layers = [L.Embedding(50, 8, input_shape=(9,), mask_zero=mask)]
    rnn = _rnn(kind, units, return_sequences=return_sequences)
    layers.append(L.Bidirectional(rnn) if bidir else rnn)
    if return_sequences:
        layers.append(L.GlobalAveragePooling1D())
    layers.append(L.Dense(3, activation="softmax"))
    m = fn.Sequential(layers, seed=seed)
    m.build()
    for v in m.weights:  # a non-zero bias, so that the bias paths matter
        if v.path.endswith("bias") and v.value.size:
            v.value[...] = np.random.default_rng(5).normal(scale=0.2, size=v.shape)
    return m


def _ids(rng, n=40, mask=False):
    x = rng.integers(1, 50, size=(n, 9))
    if mask:  # left-padded, as pad_sequences makes them
        for i in range(n):
            x[i, :rng.integers(0, 6)] = 0
    return x.astype(np.int32)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bidir,mask,seq", [(False, False, False), (True, True, True),
                                            (True, False, False), (False, True, True)])
@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_quantized_layer_is_close_to_float(rng, kind, bidir, mask, seq, mode):
    m = _seq_model(kind, bidir, mask, seq)
    x = _ids(rng, mask=mask)
    cal = dict(calibration_data=_ids(rng, 60, mask)) if mode == "static" else {}
    q = fn.quantization.quantize(m, mode=mode, **cal)
    names = fn.quantization.quantized_layers(q)
    rnn_names = [la.name for la in q.layers[1].all_layers() if isinstance(la, (L.LSTM, L.GRU))]
    assert rnn_names and all(names.get(n) == mode for n in rnn_names)
    pf, pq = m.predict(x), q.predict(x)
    err = np.abs(pf - pq).max()
    assert 0 < err < 0.03, err


@pytest.mark.parametrize("kind", ["lstm", "gru_before"])
def test_quantized_layer_states_and_go_backwards(rng, kind):
    """return_state, initial_state and go_backwards through the int8 kernel (functional)."""
    inp = fn.Input((7, 5))
    h0 = fn.Input((6,))
    states = [h0, fn.Input((6,))] if kind == "lstm" else [h0]
    outs = _rnn(kind, 6, return_sequences=True, return_state=True,
                go_backwards=True)(inp, initial_state=states)
    m = fn.Model([inp] + states, outs)
    xs = [rng.normal(size=(5, 7, 5)).astype(np.float32)] + [
        rng.uniform(-0.5, 0.5, size=(5, 6)).astype(np.float32) for _ in states]
    pf = m.predict(xs)  # builds the functional model
    q = fn.quantization.quantize(m)
    pq = q.predict(xs)
    assert len(pq) == len(pf) == 1 + len(states)
    for a, b in zip(pf, pq):
        assert a.shape == b.shape
        assert np.abs(a - b).max() < 0.03


@pytest.mark.parametrize("kind", KINDS)
def test_quantized_layer_matches_kernel_twin(rng, kind):
    """A quantized layer's output is the twin's on its int8 weights (within float rounding)."""
    m = fn.Sequential([_rnn(kind, 10, input_shape=(6, 4), return_sequences=True)], seed=1)
    m.build()
    layer = m.layers[0]
    W, R = layer.kernel.copy(), layer.recurrent_kernel.copy()
    b = np.random.default_rng(2).normal(scale=0.3, size=layer.bias.shape).astype(np.float32)
    layer.bias[...] = b
    x = rng.normal(size=(5, 6, 4)).astype(np.float32)
    q = fn.quantization.quantize(m)
    d = dict(x=x, wq=quantize_weight(W), rq=quantize_weight(R), b=b, h0=None, c0=None, mask=None)
    want = _run_twin(kind, d, False)["y"]
    np.testing.assert_allclose(q.predict(x), want, atol=5e-3, rtol=0)


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_save_load_round_trip(rng, tmp_path, mode):
    m = _seq_model("lstm", bidir=True, mask=True, return_sequences=True, units=32)
    x = _ids(rng, mask=True)
    cal = dict(calibration_data=_ids(rng, 30, True)) if mode == "static" else {}
    q = fn.quantization.quantize(m, mode=mode, **cal)
    f_path, q_path = tmp_path / "f.fastnn", tmp_path / "q.fastnn"
    m.save(f_path, include_optimizer=False)
    q.save(q_path)
    back = fn.load_model(q_path)
    np.testing.assert_array_equal(back.predict(x), q.predict(x))
    assert fn.quantization.quantized_layers(back) == fn.quantization.quantized_layers(q)
    # the recurrent kernels are int8 tensors in the file
    state = {k: a for k, a in back._state_arrays().items()}
    rk = [a for k, a in state.items() if k.endswith("recurrent_kernel_int8")]
    assert len(rk) == 2 and all(a.dtype == np.int8 for a in rk)
    if mode == "static":
        assert any(k.endswith("recurrent_kernel_input") for k in state)
    assert fn.quantization.model_bytes(q) < 0.4 * fn.quantization.model_bytes(m)
    assert q_path.stat().st_size < 0.5 * f_path.stat().st_size


def test_summary_shows_int8(rng):
    m = _seq_model("gru", bidir=True)
    q = fn.quantization.quantize(m)
    lines = []
    q.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Bidirectional, int8 dynamic" in text
    assert "Int8 weights" in text


# ---- bad input ----------------------------------------------------------------------

def test_quantized_layer_refuses_training(rng):
    m = _seq_model("lstm")
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    q = fn.quantization.quantize(m)
    q.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.raises(RuntimeError, match="inference only"):
        q.fit(_ids(rng), np.zeros(40, np.int32), epochs=1, verbose=0)


def test_quantized_layer_bad_input_shape(rng):
    m = fn.Sequential([L.LSTM(4, input_shape=(5, 3))])
    m.build()
    q = fn.quantization.quantize(m)
    with pytest.raises(ValueError):
        q.predict(np.zeros((2, 5, 4), np.float32))


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_onnx_export_of_an_int8_recurrent_layer_is_refused_by_name(kind, tmp_path):
    pytest.importorskip("onnx")
    m = fn.Sequential([getattr(L, kind)(4, input_shape=(5, 3), name="rec")])
    m.build()
    q = fn.quantization.quantize(m)
    with pytest.raises(ValueError, match="rec is an int8 " + kind):
        fn.onnx.export(q, str(tmp_path / "q.onnx"))


def test_dynamic_layer_rejects_nan(rng):
    m = fn.Sequential([L.GRU(4, input_shape=(5, 3))])
    m.build()
    q = fn.quantization.quantize(m)
    x = np.zeros((2, 5, 3), np.float32)
    x[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="'x'"):
        q.predict(x)


def test_simple_rnn_stays_float(rng):
    m = fn.Sequential([L.SimpleRNN(4, input_shape=(5, 3)), L.Dense(2)])
    m.build()
    q = fn.quantization.quantize(m)
    assert list(fn.quantization.quantized_layers(q).values()) == ["dynamic"]  # the Dense


def _args(rng, kind="lstm"):
    d = _setup(rng, kind, 2, 3, 4, 5, bias=True)
    wq, ws = d["wq"]
    rq, rs = d["rq"]
    Wp, Rp = pack_qweight(wq, ws), pack_qweight(rq, rs)
    return d, Wp, Rp


def test_kernel_bad_arguments_name_the_argument(rng):
    d, Wp, Rp = _args(rng)
    y, c, xa = (np.empty((2, 3, 5), np.float32), np.empty((2, 3, 5), np.float32),
                np.empty((2, 3, 20), np.float32))

    def call(**over):
        a = dict(y=y, c=c, xa=xa, ra=None, x=d["x"], h0=None, c0=None, mask=None, Wp=Wp.packed,
                 w_scale=Wp.scale, Rp=Rp.packed, r_scale=Rp.scale, b=d["b"], x_scale=None)
        a.update(over)
        _core.qlstm_forward(**a)

    call()
    with pytest.raises(ValueError, match="'x'"):
        call(x=d["x"][:, :, :3].copy())  # C does not match the packed W
    with pytest.raises(TypeError, match="'x'"):
        call(x=d["x"].astype(np.float64))
    with pytest.raises(ValueError, match="'Wp'"):
        call(Wp=pack_qweight(np.ones((4, 12), np.float32)).packed)  # 12 columns, not 4U
    with pytest.raises(ValueError, match="'Rp'"):
        call(Rp=np.zeros(100, np.uint8))
    with pytest.raises(ValueError, match="'w_scale'"):
        call(w_scale=Wp.scale[:3].copy())
    with pytest.raises(ValueError, match="'h_scale'"):
        call(h_scale=-1.0)
    with pytest.raises(ValueError, match="'x_zero_point'"):
        call(x_scale=0.1, x_zero_point=300)
    with pytest.raises(ValueError, match="'mask'"):
        call(mask=np.ones((2, 4), np.uint8))
    with pytest.raises(ValueError, match="'y'"):
        call(y=np.empty((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="'c'"):
        call(c=d["x"])
    with pytest.raises(ValueError, match="'x'"):
        x = d["x"].copy()
        x[0, 0, 0] = np.inf
        call(x=x)


def test_gru_kernel_bad_arguments(rng):
    d, Wp, Rp = _args(rng, "gru")
    y, xa = np.empty((2, 3, 5), np.float32), np.empty((2, 3, 15), np.float32)
    with pytest.raises(ValueError, match="'Rhp'"):
        _core.qgru_forward(y, xa, None, None, d["x"], None, None, Wp.packed, Wp.scale, Rp.packed,
                           Rp.scale, Rp.packed, Rp.scale, None, None, reset_after=True)
    with pytest.raises(ValueError, match="'Rp'"):  # the original form wants R_zr (U, 2U)
        _core.qgru_forward(y, xa, None, None, d["x"], None, None, Wp.packed, Wp.scale, Rp.packed,
                           Rp.scale, Rp.packed, Rp.scale, None, None, reset_after=False)
    with pytest.raises(ValueError, match="'b'"):
        _core.qgru_forward(y, xa, None, None, d["x"], None, None, Wp.packed, Wp.scale, Rp.packed,
                           Rp.scale, None, None, np.zeros(15, np.float32), None)
