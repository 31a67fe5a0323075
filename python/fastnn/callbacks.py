"""Keras-style training callbacks: History, EarlyStopping, ModelCheckpoint,
LearningRateScheduler, ProgbarLogger.

A trainer drives callbacks through a :class:`CallbackList`::

    cbs = CallbackList(user_callbacks, add_history=True, add_progbar=True, verbose=1,
                       model=model, params={"epochs": E, "steps": S, "samples": N,
                                            "batch_size": B})
    cbs.on_train_begin()
    for epoch in range(E):
        cbs.on_epoch_begin(epoch)
        for step in range(S):
            ...                                    # one batch
            cbs.on_train_batch_end(step, {"loss": running_mean_loss, "accuracy": ...,
                                          "size": samples_in_this_batch})
        cbs.on_epoch_end(epoch, {"loss": ..., "accuracy": ..., "val_loss": ..., ...})
        if model.stop_training:
            break
    cbs.on_train_end()
    return cbs.history

Callbacks touch the model only through ``model.stop_training`` (EarlyStopping),
``model.optimizer.learning_rate`` (LearningRateScheduler),
``model.get_weights()`` / ``model.set_weights(list)`` (EarlyStopping with
``restore_best_weights``) and ``model.save(path)`` (ModelCheckpoint). Logs are dicts of
floats such as ``{"loss": 0.12, "accuracy": 0.96, "val_loss": 0.15, "val_accuracy": 0.95}``.
"""
from __future__ import annotations

import inspect
import math
import numbers
import os
import shutil
import sys
import time
import warnings

import numpy as np

from . import distribute

__all__ = ["Callback", "CallbackList", "History", "EarlyStopping", "ModelCheckpoint",
           "LearningRateScheduler", "ProgbarLogger"]

#: Clock used for every timing here (tests replace it with a fake one).
_clock = time.perf_counter

_HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
          "on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_end",
          "on_test_batch_begin", "on_test_batch_end")


class Callback:
    """Base class: override the hooks you need; every hook is a no-op here.

    Attributes:
        model: the model being trained (set by :meth:`set_model`).
        params: training parameters (set by :meth:`set_params`), e.g. ``{"epochs": E,
            "steps": S, "samples": N, "batch_size": B}``.
    """

    model = None
    params: dict = {}

    def set_model(self, model) -> None:
        """Attach the model being trained."""
        self.model = model

    def set_params(self, params) -> None:
        """Receive training parameters (epochs, steps, samples, batch_size)."""
        self.params = dict(params or {})

    def on_train_begin(self, logs=None) -> None:
        """Called once before the first epoch."""

    def on_train_end(self, logs=None) -> None:
        """Called once after the last epoch (also after an early stop)."""

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        """Called at the start of epoch ``epoch`` (0-based)."""

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        """Called at the end of epoch ``epoch`` with the epoch's metrics (and val_* ones)."""

    def on_train_batch_begin(self, batch: int, logs=None) -> None:
        """Called before training batch ``batch`` (0-based within the epoch)."""

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        """Called after training batch ``batch`` with running means and ``"size"``."""

    def on_test_begin(self, logs=None) -> None:
        """Called before an evaluation (validation) pass."""

    def on_test_end(self, logs=None) -> None:
        """Called after an evaluation (validation) pass."""

    def on_test_batch_begin(self, batch: int, logs=None) -> None:
        """Called before evaluation batch ``batch``."""

    def on_test_batch_end(self, batch: int, logs=None) -> None:
        """Called after evaluation batch ``batch``."""


class CallbackList(Callback):
    """Calls every hook on each callback, in list order.

    Args:
        callbacks: the user's callbacks.
        add_history: append a :class:`History` (unless one is in the list); it is
            available as ``.history``.
        add_progbar: put a :class:`ProgbarLogger` with ``verbose`` first (unless one is
            in the list), so its epoch line ends before other callbacks print.
        verbose: verbosity of the added ProgbarLogger.
        model, params: passed to :meth:`set_model` / :meth:`set_params` when given.
    """

    def __init__(self, callbacks=None, *, add_history: bool = False, add_progbar: bool = False,
                 verbose: int = 1, model=None, params=None):
        self.callbacks = list(callbacks or [])
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be fastnn.callbacks.Callback instances, "
                                f"got {type(cb).__name__}")
        self.history = next((cb for cb in self.callbacks if isinstance(cb, History)), None)
        if add_history and self.history is None:
            self.history = History()
            self.callbacks.append(self.history)
        if add_progbar and not any(isinstance(cb, ProgbarLogger) for cb in self.callbacks):
            self.callbacks.insert(0, ProgbarLogger(verbose=verbose))
        if model is not None:
            self.set_model(model)
        if params is not None:
            self.set_params(params)

    def append(self, callback: Callback) -> None:
        """Add a callback at the end."""
        self.callbacks.append(callback)

    def __iter__(self):
        return iter(self.callbacks)

    def __len__(self) -> int:
        return len(self.callbacks)

    def set_model(self, model) -> None:
        """Attach ``model`` to this list and every callback."""
        self.model = model
        for cb in self.callbacks:
            cb.set_model(model)

    def set_params(self, params) -> None:
        """Give ``params`` to this list and every callback."""
        self.params = dict(params or {})
        for cb in self.callbacks:
            cb.set_params(params)


def _fan_out(name):
    def hook(self, *args, **kwargs):
        for cb in self.callbacks:
            getattr(cb, name)(*args, **kwargs)
    hook.__name__ = name
    hook.__doc__ = f"Call ``{name}`` on every callback."
    return hook


for _name in _HOOKS:
    setattr(CallbackList, _name, _fan_out(_name))
del _name


def _say(*args) -> None:
    """print, on the rank that prints (all but rank 0 stay quiet under fastnn.distribute)."""
    if distribute.is_writer():
        print(*args)


def _scalar(v):
    """A Python float for numeric scalars (NumPy included); other values unchanged."""
    if isinstance(v, (numbers.Real, np.generic)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, np.ndarray) and v.ndim == 0:
        return float(v)
    return v


class History(Callback):
    """Records the epoch logs: ``history[key]`` is a list with one value per epoch.

    Also records ``history["epoch_time"]``, the wall time of each epoch in seconds (from
    ``on_epoch_begin`` to ``on_epoch_end``; a trainer may pass its own "epoch_time" in
    the logs instead), and ``epoch``, the list of epoch indices. Both are reset at
    ``on_train_begin``. Sets ``model.history`` to itself, as Keras does.
    """

    def __init__(self):
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []
        self._t0 = None

    def on_train_begin(self, logs=None) -> None:
        """Start a fresh record."""
        self.history = {}
        self.epoch = []

    def on_epoch_begin(self, epoch, logs=None) -> None:
        """Start the epoch timer."""
        self._t0 = _clock()

    def on_epoch_end(self, epoch, logs=None) -> None:
        """Append the epoch's logs and its wall time."""
        logs = dict(logs or {})
        if "epoch_time" not in logs and self._t0 is not None:
            logs["epoch_time"] = _clock() - self._t0
        self._t0 = None
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(_scalar(v))
        if self.model is not None:
            try:
                self.model.history = self
            except AttributeError:  # pragma: no cover - models that forbid new attributes
                pass


_MAX_SUFFIXES = ("acc", "accuracy", "auc", "precision", "recall", "f1", "f1_score")


def _resolve_mode(monitor: str, mode: str, who: str) -> str:
    """'min' or 'max' for ``monitor``; mode='auto' picks max for accuracy-like names."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{who}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    return "max" if monitor.endswith(_MAX_SUFFIXES) else "min"


def _improved(current: float, reference: float, mode: str, min_delta: float) -> bool:
    if mode == "min":
        return current < reference - min_delta
    return current > reference + min_delta


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has stopped improving.

    After each epoch the monitored value is compared with the best so far: it improves
    when it is lower (mode "min") or higher (mode "max") by more than ``min_delta``. After
    ``patience`` epochs in a row without improvement, ``model.stop_training`` is set to
    True. Mode "auto" is "max" for names ending in acc/accuracy/auc/precision/recall/f1
    and "min" otherwise.

    Args:
        monitor: the log key to watch, e.g. "val_loss" or "val_accuracy".
        min_delta: the smallest change that counts as an improvement (absolute value).
        patience: epochs without improvement before stopping.
        mode: "auto", "min" or "max".
        restore_best_weights: at the end of training, put back the weights of the best
            epoch (copies taken with ``model.get_weights()``, restored with
            ``model.set_weights``); when no epoch improved, the first epoch's weights.
        verbose: 1 prints a line when stopping and when restoring.
        baseline: a value the monitor must beat for the patience counter to reset.
        start_from_epoch: epochs to ignore at the start (warm-up).

    Attributes: ``best``, ``best_epoch``, ``wait``, ``stopped_epoch`` (0 when training
    was not stopped).
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0, patience: int = 0,
                 mode: str = "auto", restore_best_weights: bool = False, verbose: int = 0,
                 baseline: float | None = None, start_from_epoch: int = 0):
        if patience < 0:
            raise ValueError(f"EarlyStopping: patience must be >= 0, got {patience}")
        self.monitor = monitor
        self.min_delta = abs(float(min_delta))
        self.patience = int(patience)
        self.mode = _resolve_mode(monitor, mode, "EarlyStopping")
        self.restore_best_weights = restore_best_weights
        self.verbose = verbose
        self.baseline = baseline
        self.start_from_epoch = start_from_epoch
        self._reset()

    def _reset(self):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.best_weights = None

    def _snapshot(self):
        return [np.array(w, copy=True) for w in self.model.get_weights()]

    def on_train_begin(self, logs=None) -> None:
        """Reset the best value, the patience counter and the saved weights."""
        self._reset()

    def on_epoch_end(self, epoch, logs=None) -> None:
        """Compare the monitored value with the best one; stop when patience runs out."""
        logs = logs or {}
        if self.monitor not in logs:
            warnings.warn(f"EarlyStopping is conditioned on {self.monitor!r}, which is not "
                          f"in the logs (available: {', '.join(logs) or 'none'})",
                          RuntimeWarning, stacklevel=2)
            return
        if epoch < self.start_from_epoch:
            return
        current = float(logs[self.monitor])
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self._snapshot()  # fallback when nothing ever improves
        self.wait += 1
        if _improved(current, self.best, self.mode, self.min_delta):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self._snapshot()
            if self.baseline is None or _improved(current, self.baseline, self.mode,
                                                  self.min_delta):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None) -> None:
        """Report the stop and restore the best weights when asked to."""
        if self.stopped_epoch > 0 and self.verbose > 0:
            _say(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                _say(f"Restoring model weights from the end of the best epoch: "
                      f"{self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model after every epoch, or only when ``monitor`` improves.

    ``filepath`` may contain ``str.format`` fields filled from the epoch's logs and the
    1-based epoch number, e.g. ``"ckpt/model-{epoch:02d}-{val_loss:.3f}.fastnn"``; the
    folder is created when missing. Saving calls ``model.save(path)``.

    Args:
        filepath: path or format string.
        monitor: the log key compared when ``save_best_only``.
        save_best_only: save only when ``monitor`` improves on the best value so far
            (kept across ``fit`` calls with the same callback).
        mode: "auto", "min" or "max" (as for :class:`EarlyStopping`).
        verbose: 1 prints a line per epoch about what was saved.

    Attributes: ``best``, ``last_saved`` (the last path written, or None).
    """

    def __init__(self, filepath, monitor: str = "val_loss", save_best_only: bool = False,
                 mode: str = "auto", verbose: int = 0):
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.save_best_only = save_best_only
        self.mode = _resolve_mode(monitor, mode, "ModelCheckpoint")
        self.verbose = verbose
        self.best = math.inf if self.mode == "min" else -math.inf
        self.last_saved = None

    def _path(self, epoch, logs) -> str:
        fields = {k: _scalar(v) for k, v in logs.items()}
        fields["epoch"] = epoch + 1
        try:
            return self.filepath.format(**fields)
        except KeyError as e:
            raise KeyError(f"ModelCheckpoint: filepath {self.filepath!r} uses the field "
                           f"{e.args[0]!r}, which is not in the logs of epoch {epoch + 1} "
                           f"(available: {', '.join(fields)})") from None

    def _save(self, path) -> None:
        # under fastnn.distribute, rank 0 writes and the other ranks wait for the file
        if distribute.is_writer():
            folder = os.path.dirname(path)
            if folder:
                os.makedirs(folder, exist_ok=True)
            self.model.save(path)
        distribute.barrier()
        self.last_saved = path

    def on_epoch_end(self, epoch, logs=None) -> None:
        """Save the model (always, or when the monitored value improved)."""
        logs = logs or {}
        if not self.save_best_only:
            path = self._path(epoch, logs)
            if self.verbose > 0:
                _say(f"Epoch {epoch + 1}: saving model to {path}")
            self._save(path)
            return
        if self.monitor not in logs:
            warnings.warn(f"ModelCheckpoint can save the best model only with "
                          f"{self.monitor!r} in the logs (available: "
                          f"{', '.join(logs) or 'none'}); skipping", RuntimeWarning,
                          stacklevel=2)
            return
        current = float(logs[self.monitor])
        if _improved(current, self.best, self.mode, 0.0):
            path = self._path(epoch, logs)
            if self.verbose > 0:
                _say(f"Epoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to "
                      f"{current:.5f}, saving model to {path}")
            self.best = current
            self._save(path)
        elif self.verbose > 0:
            _say(f"Epoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")


_HIDDEN = frozenset({"size", "batch", "epoch_time"})


def _fmt(v) -> str:
    v = _scalar(v)
    if isinstance(v, float):
        return f"{v:.4f}" if v == 0 or abs(v) >= 1e-3 or not math.isfinite(v) else f"{v:.4e}"
    return str(v)


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate at the start of every epoch.

    ``schedule(epoch, lr)`` gets the 0-based epoch and the current rate and returns the
    new one (a function of the epoch alone, ``schedule(epoch)``, works too). The rate in
    use is added to each epoch's logs as ``learning_rate``. For a rate that changes every
    step, give the optimizer a schedule from :mod:`fastnn.optim.schedules` instead.

    Args:
        schedule: the function above; it must return a positive number.
        verbose: 1 prints the rate set at each epoch.
    """

    def __init__(self, schedule, verbose: int = 0):
        if not callable(schedule):
            raise TypeError(f"LearningRateScheduler: schedule must be callable, got {schedule!r}")
        self.schedule = schedule
        self.verbose = verbose
        try:
            inspect.signature(schedule).bind(0, 0.1)
            self._takes_lr = True
        except TypeError:
            self._takes_lr = False
        except ValueError:  # a builtin without a signature: assume (epoch, lr)
            self._takes_lr = True

    def on_epoch_begin(self, epoch, logs=None) -> None:
        """Ask the schedule for this epoch's rate and give it to the optimizer."""
        opt = self.model.optimizer
        lr = self.schedule(epoch, float(opt.learning_rate)) if self._takes_lr else self.schedule(epoch)
        lr = _scalar(lr)
        if not isinstance(lr, float) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"LearningRateScheduler: schedule returned {lr!r} for epoch "
                             f"{epoch + 1}; expected a positive number")
        opt.learning_rate = lr
        if self.verbose > 0:
            _say(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr:g}.")

    def on_epoch_end(self, epoch, logs=None) -> None:
        """Record the rate used in ``logs["learning_rate"]``."""
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class ProgbarLogger(Callback):
    """Prints training progress.

    - verbose=1 on a terminal (``isatty()``): a live line per epoch, redrawn in place
      with ``\\r`` at most ~10 times a second, showing step/steps, a bar, elapsed time,
      ETA, samples/s and the running loss and metrics (cut to the terminal width); it
      ends with the epoch's metrics (validation included).
    - verbose=1 when the output is not a terminal (a file, a pipe, a CI log), and
      verbose=2: exactly one line per epoch, e.g.
      ``Epoch 3/5 - 1.23s - 48780 samples/s - loss: 0.1234 - accuracy: 0.9650 -
      val_loss: 0.1500 - val_accuracy: 0.9550``.
    - verbose=0: nothing.

    The time is the epoch's wall time (validation included); samples/s counts training
    samples (the "size" of each batch's logs, else ``params["samples"]``) over the time
    from the start of the epoch to the end of its last training batch. Values are
    printed with 4 decimals (4 significant digits in e-notation below 1e-3).

    Args:
        verbose: 0, 1 or 2.
        stream: where to write (default: ``sys.stdout`` at the time training starts).
    """

    BAR_WIDTH = 30
    REDRAW_INTERVAL_S = 0.1

    def __init__(self, verbose: int = 1, stream=None):
        if verbose not in (0, 1, 2):
            raise ValueError(f"ProgbarLogger: verbose must be 0, 1 or 2, got {verbose!r}")
        self.verbose = verbose
        self.stream = stream
        self._out = None
        self._live = False
        self._begin_epoch(0)

    def _begin_epoch(self, epoch):
        self._epoch = epoch
        self._t0 = _clock()
        self._t_train = None
        self._seen = 0
        self._step = 0
        self._batch_logs: dict = {}
        self._last_draw = -math.inf
        self._prev_len = 0

    def on_train_begin(self, logs=None) -> None:
        """Pick the output stream and whether it is a terminal."""
        self._out = self.stream if self.stream is not None else sys.stdout
        self._live = self.verbose == 1 and _isatty(self._out)
        # A live line wider than the terminal would wrap, and "\r" would then redraw
        # only its last row: in-progress lines are cut to the width.
        self._cols = shutil.get_terminal_size(fallback=(80, 24)).columns

    def on_epoch_begin(self, epoch, logs=None) -> None:
        """Start timing the epoch."""
        if self._out is None:
            self.on_train_begin()
        self._begin_epoch(epoch)

    def on_train_batch_end(self, batch, logs=None) -> None:
        """Count the batch; redraw the live line if enough time has passed."""
        logs = logs or {}
        self._step = batch + 1
        size = logs.get("size", self.params.get("batch_size"))
        self._seen += int(size) if size is not None else 0
        self._t_train = _clock()
        self._batch_logs = logs
        if self._live and self._t_train - self._last_draw >= self.REDRAW_INTERVAL_S:
            self._last_draw = self._t_train
            self._draw(self._live_line(self._t_train)[:max(self._cols - 1, 20)])

    def on_epoch_end(self, epoch, logs=None) -> None:
        """Print the epoch's line (finishing the live line on a terminal)."""
        if self.verbose == 0:
            return
        if self._out is None:
            self.on_train_begin()
        now = _clock()
        logs = logs if logs else self._batch_logs
        parts = [self._title(), f"{now - self._t0:.2f}s"]
        rate = self._rate(now)
        if rate is not None:
            parts.append(f"{rate:.0f} samples/s")
        parts += self._metrics(logs)
        if self._live:
            parts[0] = f"{parts[0]} {self._progress(self._steps() or self._step)}"
            self._draw(" - ".join(parts))
            self._out.write("\n")
        else:
            self._out.write(" - ".join(parts) + "\n")
        self._out.flush()

    # ---- formatting helpers
    def _steps(self):
        return self.params.get("steps")

    def _title(self) -> str:
        epochs = self.params.get("epochs")
        return f"Epoch {self._epoch + 1}/{epochs}" if epochs else f"Epoch {self._epoch + 1}"

    def _rate(self, now):
        seen = self._seen or self.params.get("samples") or 0
        t_end = self._t_train if self._t_train is not None else now
        dt = t_end - self._t0
        return seen / dt if seen and dt > 0 else None

    @staticmethod
    def _metrics(logs) -> list[str]:
        return [f"{k}: {_fmt(v)}" for k, v in logs.items() if k not in _HIDDEN]

    def _progress(self, step) -> str:
        steps = self._steps()
        if not steps:
            return f"{step}/?"
        w = self.BAR_WIDTH
        done = min(w, int(w * step / steps))
        bar = "=" * w if step >= steps else "=" * done + ">" + "." * (w - done - 1)
        return f"{step:>{len(str(steps))}}/{steps} [{bar}]"

    def _live_line(self, now) -> str:
        elapsed = now - self._t0
        parts = [f"{self._title()} {self._progress(self._step)}", f"{elapsed:.1f}s"]
        steps = self._steps()
        if steps and 0 < self._step < steps:
            parts.append(f"ETA {elapsed / self._step * (steps - self._step):.1f}s")
        rate = self._rate(now)
        if rate is not None:
            parts.append(f"{rate:.0f} samples/s")
        return " - ".join(parts + self._metrics(self._batch_logs))

    def _draw(self, line: str) -> None:
        pad = " " * max(0, self._prev_len - len(line))
        self._out.write("\r" + line + pad)
        self._out.flush()
        self._prev_len = len(line)
