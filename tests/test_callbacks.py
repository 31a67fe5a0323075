"""fastnn.callbacks with a tiny fake model: History, EarlyStopping, ModelCheckpoint,
ProgbarLogger output (non-terminal and terminal), CallbackList."""
import io
import re

import numpy as np
import pytest

from fastnn import callbacks as C


class FakeModel:
    """What callbacks may touch: stop_training, get_weights/set_weights, save."""

    def __init__(self):
        self.stop_training = False
        self.flat = np.zeros(5, np.float32)  # weights are views into one buffer
        self.saved = []
        self.set_calls = 0

    def get_weights(self):
        return [self.flat[:3].reshape(3, 1), self.flat[3:]]

    def set_weights(self, weights):
        self.set_calls += 1
        self.flat[:3] = weights[0].reshape(-1)
        self.flat[3:] = weights[1]

    def save(self, path):
        self.saved.append(path)


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(C, "_clock", c)
    return c


def run(callbacks, model, epoch_logs, steps=0, params=None, clock=None, epoch_s=1.0,
        batch_logs=None):
    """Drive callbacks the way the trainer does; epoch e's weights are all e."""
    if params is None:
        params = {"epochs": len(epoch_logs)}
    cbs = C.CallbackList(callbacks, model=model, params=params)
    cbs.on_train_begin()
    done = 0
    for e, logs in enumerate(epoch_logs):
        cbs.on_epoch_begin(e)
        model.flat[:] = e
        for s in range(steps):
            if clock:
                clock.t += epoch_s / max(steps, 1) * 0.8
            cbs.on_train_batch_end(s, dict(batch_logs(e, s)) if batch_logs else {})
        if clock:
            clock.t += epoch_s - (epoch_s * 0.8 if steps else 0)
        cbs.on_epoch_end(e, dict(logs))
        done += 1
        if model.stop_training:
            break
    cbs.on_train_end()
    return done


# ---------------------------------------------------------------- History

def test_history_records_logs_epochs_and_epoch_time(clock):
    h = C.History()
    m = FakeModel()
    logs = [{"loss": 0.5, "accuracy": np.float32(0.75), "val_loss": 0.6},
            {"loss": 0.25, "accuracy": 0.875, "val_loss": 0.55}]
    run([h], m, logs, clock=clock, epoch_s=2.5)
    assert h.epoch == [0, 1]
    assert h.history["loss"] == [0.5, 0.25]
    assert h.history["accuracy"] == [0.75, 0.875] and type(h.history["accuracy"][0]) is float
    assert h.history["val_loss"] == [0.6, 0.55]
    assert h.history["epoch_time"] == pytest.approx([2.5, 2.5])
    assert m.history is h
    run([h], m, logs[:1], clock=clock)  # a new fit starts a fresh record
    assert h.epoch == [0] and h.history["loss"] == [0.5]


# ---------------------------------------------------------------- EarlyStopping

def vl(*values, key="val_loss"):
    return [{key: v, "loss": 1.0} for v in values]


@pytest.mark.parametrize("patience, values, epochs_run, best_epoch", [
    (0, [1.0, 0.9, 0.95, 0.5], 3, 1),          # stops at the first non-improvement
    (2, [1.0, 0.9, 0.95, 0.92, 0.5], 4, 1),    # two bad epochs in a row
    (2, [1.0, 0.9, 0.95, 0.8, 0.85, 0.7], 6, 5),  # improvement resets the count
    (1, [1.0, 1.0, 0.5], 2, 0),                # equal is not an improvement
])
def test_early_stopping_patience(patience, values, epochs_run, best_epoch):
    es = C.EarlyStopping(patience=patience)
    m = FakeModel()
    assert run([es], m, vl(*values)) == epochs_run
    assert es.best_epoch == best_epoch
    assert m.stop_training == (epochs_run < len(values))
    assert es.stopped_epoch == (epochs_run - 1 if m.stop_training else 0)


def test_early_stopping_min_delta():
    es = C.EarlyStopping(patience=1, min_delta=0.1)
    m = FakeModel()
    # 0.95 and 0.91 are not 0.1 better than 1.0: no improvement -> stop at epoch 1
    assert run([es], m, vl(1.0, 0.95, 0.91, 0.5)) == 2
    es = C.EarlyStopping(patience=1, min_delta=-0.1)  # sign ignored, as in Keras
    assert es.min_delta == 0.1
    assert run([es], FakeModel(), vl(1.0, 0.85, 0.7, 0.65)) == 4


@pytest.mark.parametrize("monitor, mode, values, epochs_run", [
    ("val_accuracy", "auto", [0.5, 0.6, 0.55, 0.9], 3),   # auto -> max
    ("val_acc", "auto", [0.5, 0.4, 0.9], 2),
    ("val_auc", "auto", [0.5, 0.6, 0.7], 3),
    ("val_f1", "auto", [0.5, 0.6, 0.7], 3),
    ("val_loss", "max", [0.5, 0.6, 0.4, 0.9], 3),
    ("val_accuracy", "min", [0.5, 0.6, 0.1], 2),
    ("loss_custom", "auto", [0.5, 0.6, 0.1], 2),          # auto -> min
])
def test_early_stopping_mode(monitor, mode, values, epochs_run):
    es = C.EarlyStopping(monitor=monitor, mode=mode, patience=0)
    m = FakeModel()
    assert run([es], m, vl(*values, key=monitor)) == epochs_run
    assert m.stop_training == (epochs_run < len(values))


def test_early_stopping_restores_best_weights_as_copies():
    es = C.EarlyStopping(patience=2, restore_best_weights=True)
    m = FakeModel()
    run([es], m, vl(1.0, 0.5, 0.7, 0.8, 0.1))
    assert m.stop_training and es.stopped_epoch == 3
    # epoch e leaves weights == e; best was epoch 1, although the buffer changed since
    np.testing.assert_array_equal(m.flat, np.full(5, 1.0))
    assert m.set_calls == 1


def test_early_stopping_restores_at_end_even_without_stopping():
    es = C.EarlyStopping(patience=5, restore_best_weights=True)
    m = FakeModel()
    run([es], m, vl(1.0, 0.3, 0.7))
    assert not m.stop_training
    np.testing.assert_array_equal(m.flat, np.full(5, 1.0))


def test_early_stopping_no_restore_by_default_and_verbose(capsys):
    es = C.EarlyStopping(patience=0, verbose=1, restore_best_weights=True)
    m = FakeModel()
    run([es], m, vl(1.0, 2.0))
    out = capsys.readouterr().out
    assert "Epoch 2: early stopping" in out
    assert "Restoring model weights from the end of the best epoch: 1." in out
    es = C.EarlyStopping(patience=0)
    m = FakeModel()
    run([es], m, vl(1.0, 2.0))
    assert m.set_calls == 0 and capsys.readouterr().out == ""


def test_early_stopping_baseline_and_start_from_epoch():
    values = vl(0.9, 0.8, 0.85, 0.7, 0.6)
    assert run([C.EarlyStopping(patience=2)], FakeModel(), values) == 5
    # improving, but never beating the baseline: the patience count is not reset
    es = C.EarlyStopping(patience=2, baseline=0.5)
    assert run([es], FakeModel(), values) == 3 and es.stopped_epoch == 2
    values = vl(1.0, 2.0, 3.0, 2.5, 2.6)
    assert run([C.EarlyStopping(patience=0)], FakeModel(), values) == 2
    es = C.EarlyStopping(patience=0, start_from_epoch=2)  # epochs 0 and 1 ignored
    assert run([es], FakeModel(), values) == 5 and es.stopped_epoch == 4


def test_early_stopping_missing_monitor_warns_and_bad_args():
    es = C.EarlyStopping(monitor="val_loss", patience=0)
    m = FakeModel()
    with pytest.warns(RuntimeWarning, match="'val_loss', which is not in the logs "
                                            r"\(available: loss\)"):
        run([es], m, [{"loss": 1.0}, {"loss": 2.0}])
    assert not m.stop_training
    with pytest.raises(ValueError, match="mode must be 'auto', 'min' or 'max'"):
        C.EarlyStopping(mode="up")
    with pytest.raises(ValueError, match="patience must be >= 0"):
        C.EarlyStopping(patience=-1)


# ---------------------------------------------------------------- ModelCheckpoint

def test_checkpoint_best_only_naming(tmp_path):
    fp = str(tmp_path / "ck" / "model-{epoch:02d}-{val_loss:.3f}.fastnn")
    mc = C.ModelCheckpoint(fp, save_best_only=True)
    m = FakeModel()
    run([mc], m, vl(0.5, 0.6, 0.25, 0.25, 0.1234))
    assert m.saved == [str(tmp_path / "ck" / n) for n in
                       ("model-01-0.500.fastnn", "model-03-0.250.fastnn",
                        "model-05-0.123.fastnn")]
    assert (tmp_path / "ck").is_dir()  # folder created
    assert mc.best == 0.1234 and mc.last_saved == m.saved[-1]


def test_checkpoint_every_epoch_and_max_mode(tmp_path):
    m = FakeModel()
    run([C.ModelCheckpoint(str(tmp_path / "e{epoch}.fastnn"))], m, vl(0.5, 0.6))
    assert m.saved == [str(tmp_path / "e1.fastnn"), str(tmp_path / "e2.fastnn")]
    m = FakeModel()
    mc = C.ModelCheckpoint(tmp_path / "best.fastnn", monitor="val_accuracy",
                           save_best_only=True)
    run([mc], m, vl(0.5, 0.7, 0.6, 0.9, key="val_accuracy"))
    assert m.saved == [str(tmp_path / "best.fastnn")] * 3
    assert mc.best == 0.9


def test_checkpoint_verbose_and_missing_fields(tmp_path, capsys):
    m = FakeModel()
    mc = C.ModelCheckpoint(str(tmp_path / "b.fastnn"), save_best_only=True, verbose=1)
    run([mc], m, vl(0.5, 0.6))
    out = capsys.readouterr().out
    assert "Epoch 1: val_loss improved from inf to 0.50000, saving model to" in out
    assert "Epoch 2: val_loss did not improve from 0.50000" in out
    with pytest.raises(KeyError, match="uses the field 'val_acc', which is not in the logs "
                                       r"of epoch 1 \(available: val_loss, loss, epoch\)"):
        run([C.ModelCheckpoint(str(tmp_path / "{val_acc:.2f}"))], FakeModel(), vl(0.5))
    with pytest.warns(RuntimeWarning, match="only with 'val_loss' in the logs"):
        run([C.ModelCheckpoint(str(tmp_path / "x"), save_best_only=True)], m, [{"loss": 1}])


# ---------------------------------------------------------------- ProgbarLogger

PARAMS = {"epochs": 3, "steps": 4, "samples": 1000, "batch_size": 256}


def batch_logs(e, s):
    size = 256 if s < 3 else 232
    return {"loss": 0.5 / (e + 1) - 0.01 * s, "accuracy": 0.8 + 0.01 * s, "size": size}


EPOCH_LOGS = [{"loss": 0.4712, "accuracy": 0.83, "val_loss": 0.51234, "val_accuracy": 0.8},
              {"loss": 0.2, "accuracy": 0.9, "val_loss": 0.00012345, "val_accuracy": 0.95}]


def test_progbar_not_a_terminal_prints_one_line_per_epoch(capsys, clock):
    run([C.ProgbarLogger()], FakeModel(), EPOCH_LOGS, steps=4, params=PARAMS, clock=clock,
        epoch_s=1.25, batch_logs=batch_logs)
    out = capsys.readouterr().out
    # 1000 samples in 0.8 * 1.25 s of training; the epoch (with validation) took 1.25 s
    assert out == (
        "Epoch 1/3 - 1.25s - 1000 samples/s - loss: 0.4712 - accuracy: 0.8300 - "
        "val_loss: 0.5123 - val_accuracy: 0.8000\n"
        "Epoch 2/3 - 1.25s - 1000 samples/s - loss: 0.2000 - accuracy: 0.9000 - "
        "val_loss: 1.2345e-04 - val_accuracy: 0.9500\n")
    assert "\r" not in out


def test_progbar_format_matches_spec_regex(capsys):
    run([C.ProgbarLogger(verbose=2)], FakeModel(), EPOCH_LOGS, steps=4, params=PARAMS,
        batch_logs=batch_logs)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    pat = (r"Epoch \d+/3 - \d+\.\d\ds - \d+ samples/s - loss: [\d.e-]+ - accuracy: [\d.]+ - "
           r"val_loss: [\d.e-]+ - val_accuracy: [\d.]+")
    assert all(re.fullmatch(pat, ln) for ln in lines), lines


def test_progbar_without_batches_or_params(capsys, clock):
    cb = C.ProgbarLogger()
    run([cb], FakeModel(), [{"loss": 1.0}], params={}, clock=clock, epoch_s=2.0)
    assert capsys.readouterr().out == "Epoch 1 - 2.00s - loss: 1.0000\n"


def test_progbar_verbose_0_is_silent(capsys):
    tty = TTY()
    run([C.ProgbarLogger(verbose=0)], FakeModel(), EPOCH_LOGS, steps=4, params=PARAMS,
        batch_logs=batch_logs)
    run([C.ProgbarLogger(verbose=0, stream=tty)], FakeModel(), EPOCH_LOGS, steps=4,
        params=PARAMS, batch_logs=batch_logs)
    assert capsys.readouterr().out == "" and tty.getvalue() == ""
    with pytest.raises(ValueError, match="verbose must be 0, 1 or 2"):
        C.ProgbarLogger(verbose=3)


class TTY(io.StringIO):
    def isatty(self):
        return True


def test_progbar_terminal_live_bar_throttled(clock, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    tty = TTY()
    steps = 50
    params = {"epochs": 1, "steps": steps, "samples": steps * 10, "batch_size": 10}
    # 50 batches in 0.8 s of training (16 ms each): at most ~0.8 / 0.1 + 1 redraws
    run([C.ProgbarLogger(stream=tty)], FakeModel(), [{"loss": 0.1, "val_loss": 0.2}],
        steps=steps, params=params, clock=clock, epoch_s=1.0,
        batch_logs=lambda e, s: {"loss": 1.0 / (s + 1), "size": 10})
    out = tty.getvalue()
    frames = out.split("\r")[1:]
    assert 5 <= len(frames) <= 11, len(frames)
    assert out.endswith("\n") and out.count("\n") == 1
    first = frames[0]
    assert re.match(r"Epoch 1/1  1/50 \[>\.{29}\] - 0\.0s - ETA 0\.8s - \d+ samples/s - "
                    r"loss: 1\.0000", first), first
    mid = frames[len(frames) // 2]
    assert re.search(r" \d+/50 \[=+>\.+\] - ", mid), mid
    last = frames[-1].rstrip("\n").rstrip()
    assert last == ("Epoch 1/1 50/50 [" + "=" * 30 + "] - 1.00s - 625 samples/s - "
                    "loss: 0.1000 - val_loss: 0.2000")
    # every frame is padded to erase the previous, longer one
    lens = [len(f.rstrip("\n")) for f in frames]
    assert all(b >= a for a, b in zip(lens, lens[1:]))


def test_progbar_terminal_verbose_2_prints_plain_lines(clock):
    tty = TTY()
    run([C.ProgbarLogger(verbose=2, stream=tty)], FakeModel(), EPOCH_LOGS, steps=4,
        params=PARAMS, clock=clock, epoch_s=1.25, batch_logs=batch_logs)
    assert "\r" not in tty.getvalue() and tty.getvalue().count("\n") == 2


# ---------------------------------------------------------------- CallbackList

def test_callback_list_fans_out_in_order_and_adds_defaults():
    calls = []

    class Rec(C.Callback):
        def __init__(self, tag):
            self.tag = tag

        def on_epoch_end(self, epoch, logs=None):
            calls.append((self.tag, epoch, dict(logs)))

        def on_train_batch_end(self, batch, logs=None):
            calls.append((self.tag, "b", batch))

    m = FakeModel()
    a, b = Rec("a"), Rec("b")
    cbs = C.CallbackList([a, b], add_history=True, add_progbar=True, verbose=0, model=m,
                         params={"epochs": 1})
    assert isinstance(cbs.callbacks[0], C.ProgbarLogger)
    assert isinstance(cbs.callbacks[-1], C.History) and cbs.history is cbs.callbacks[-1]
    assert len(cbs) == 4 and list(cbs)[1] is a
    assert all(cb.model is m and cb.params == {"epochs": 1} for cb in cbs)
    cbs.on_train_begin()
    cbs.on_epoch_begin(0)
    cbs.on_train_batch_begin(0)
    cbs.on_train_batch_end(0, {"loss": 1.0, "size": 2})
    cbs.on_test_begin()
    cbs.on_test_batch_end(0, {})
    cbs.on_test_end()
    cbs.on_epoch_end(0, {"loss": 1.0})
    cbs.on_train_end()
    assert calls == [("a", "b", 0), ("b", "b", 0), ("a", 0, {"loss": 1.0}),
                     ("b", 0, {"loss": 1.0})]
    assert cbs.history.history["loss"] == [1.0]
    h = C.History()
    assert C.CallbackList([h], add_history=True).history is h
    with pytest.raises(TypeError, match="Callback instances, got str"):
        C.CallbackList(["early"])


def test_progbar_terminal_lines_cut_to_terminal_width(clock, monkeypatch):
    monkeypatch.setenv("COLUMNS", "50")
    tty = TTY()
    run([C.ProgbarLogger(stream=tty)], FakeModel(), EPOCH_LOGS[:1], steps=4, params=PARAMS,
        clock=clock, epoch_s=1.25, batch_logs=batch_logs)
    frames = tty.getvalue().split("\r")[1:]
    assert all(len(f) <= 49 for f in frames[:-1])
    assert frames[-1].startswith("Epoch 1/3 4/4 [") and frames[-1].endswith(
        "val_accuracy: 0.8000\n")  # the final line is complete
