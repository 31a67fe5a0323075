"""Classification metrics on NumPy arrays: functions, and streaming objects for training loops.

How ``y_true`` / ``y_pred`` are read (the same everywhere):

- ``y_pred`` of shape (N, C) with C > 1 holds class scores (probabilities or logits); the
  predicted class is the argmax. ``y_true`` is then integer labels (N,) / (N, 1), or
  one-hot (or probability) rows (N, C) whose argmax is the label.
- ``y_pred`` of shape (N,) or (N, 1) with a float dtype holds binary scores; the
  prediction is ``y_pred > threshold`` (0.5; use 0.0 for logits). ``y_true`` is 0/1.
- ``y_pred`` of shape (N,) or (N, 1) with an integer or bool dtype holds predicted
  labels, compared with ``y_true`` labels directly.

Labels may be any non-negative integers (floats holding integers are accepted).
Precision, recall and F1 that divide by zero are 0.0 (as scikit-learn's default, without
its warning). The streaming classes (:class:`Accuracy`, :class:`Precision`, ...) keep
counts across ``update`` calls and compute the metric over everything seen at
``result()``; :func:`get` turns the names used in ``model.compile(metrics=[...])`` into
new metric objects.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = [
    "accuracy", "precision", "recall", "f1_score", "roc_auc", "confusion_matrix",
    "Metric", "Accuracy", "Precision", "Recall", "F1Score", "AUC", "MeanMetricWrapper",
    "get",
]

_AVERAGES = ("binary", "macro", "micro", "weighted", None)


# ---------------------------------------------------------------------------- input reading

def _int_labels(y: np.ndarray, fn: str, arg: str) -> np.ndarray:
    """Integer labels (>= 0) from an int/bool/float array holding integers, as int64."""
    if y.dtype.kind == "b":
        return y.astype(np.int64)
    if y.dtype.kind in "iu":
        out = y.astype(np.int64)
    elif y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError(f"{fn}: {arg} must hold integer class labels; got non-integer "
                             f"values such as {y[(y != np.round(y)) | ~np.isfinite(y)][0]!r}")
        out = y.astype(np.int64)
    else:
        raise TypeError(f"{fn}: {arg} must be numeric, got dtype {y.dtype}")
    if out.size and out.min() < 0:
        raise ValueError(f"{fn}: {arg} has negative label {int(out.min())}")
    return out


def _scores(y: np.ndarray, fn: str, arg: str) -> np.ndarray:
    if y.dtype.kind not in "biuf":
        raise TypeError(f"{fn}: {arg} must be numeric, got dtype {y.dtype}")
    if y.dtype.kind == "f" and np.isnan(y).any():
        raise ValueError(f"{fn}: {arg} contains NaN")
    return y


def _read(y_true, y_pred, threshold: float, fn: str):
    """Return (true labels, predicted labels, kind, n_classes) as int64 1-D arrays.

    kind is "multiclass" for (N, C) scores, "binary" for (N,)/(N, 1) float scores and
    "labels" for integer predictions; n_classes is C for (N, C) scores, else None.
    """
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    if yp.ndim == 0 or yp.ndim > 2:
        raise ValueError(f"{fn}: y_pred must have shape (N,), (N, 1) or (N, C), got {yp.shape}")
    n = yp.shape[0]
    if yt.ndim == 0 or yt.ndim > 2 or yt.shape[0] != n:
        raise ValueError(f"{fn}: y_true must have N = {n} rows like y_pred {yp.shape}, "
                         f"got shape {yt.shape}")
    _scores(yp, fn, "y_pred")
    if yp.ndim == 2 and yp.shape[1] > 1:
        c = yp.shape[1]
        p = np.argmax(yp, axis=1).astype(np.int64)
        if yt.ndim == 2 and yt.shape[1] == c:
            t = np.argmax(_scores(yt, fn, "y_true"), axis=1).astype(np.int64)
        elif yt.ndim == 1 or yt.shape[1] == 1:
            t = _int_labels(yt.reshape(-1), fn, "y_true")
            if t.size and t.max() >= c:
                raise ValueError(f"{fn}: y_true has label {int(t.max())} but y_pred has only "
                                 f"{c} columns (classes 0..{c - 1})")
        else:
            raise ValueError(f"{fn}: y_true must be labels (N,) or one-hot (N, {c}) to match "
                             f"y_pred {yp.shape}, got {yt.shape}")
        return t, p, "multiclass", c
    if yt.ndim == 2 and yt.shape[1] != 1:
        raise ValueError(f"{fn}: y_true {yt.shape} does not match y_pred {yp.shape}: "
                         f"expected (N,) or (N, 1) labels")
    yp = yp.reshape(-1)
    t = _int_labels(yt.reshape(-1), fn, "y_true")
    if yp.dtype.kind == "f":
        if t.size and t.max() > 1:
            raise ValueError(f"{fn}: y_pred {np.asarray(y_pred).shape} holds binary scores, "
                             f"so y_true must be 0/1, but it has label {int(t.max())} "
                             f"(pass (N, C) scores or integer predicted labels instead)")
        return t, (yp > threshold).astype(np.int64), "binary", None
    return t, _int_labels(yp, fn, "y_pred"), "labels", None


def _check_nonempty(t: np.ndarray, fn: str) -> None:
    if t.size == 0:
        raise ValueError(f"{fn}: got empty arrays (N = 0)")


def _counts(t: np.ndarray, p: np.ndarray, labels: np.ndarray):
    """Per label: true positives, predicted count, true count (entries outside labels ignored)."""
    order = np.argsort(labels, kind="stable")
    if np.any(order != np.arange(labels.size)):  # count in sorted order, report in given order
        pos = np.searchsorted(labels[order], labels)
        return tuple(c[pos] for c in _counts(t, p, labels[order]))
    k = labels.size
    ti = np.searchsorted(labels, t).clip(0, max(k - 1, 0))
    pi = np.searchsorted(labels, p).clip(0, max(k - 1, 0))
    tin = labels[ti] == t if k else np.zeros(t.shape, bool)
    pin = labels[pi] == p if k else np.zeros(p.shape, bool)
    tp = np.bincount(ti[tin & (t == p)], minlength=k)
    pred = np.bincount(pi[pin], minlength=k)
    true = np.bincount(ti[tin], minlength=k)
    return tp, pred, true


def _labels(t, p, labels, fn):
    if labels is None:
        return np.union1d(t, p)
    lab = np.asarray(labels)
    lab = _int_labels(lab.reshape(-1), fn, "labels")
    if np.unique(lab).size != lab.size:
        raise ValueError(f"{fn}: labels must be distinct, got {lab.tolist()}")
    return lab


def _div(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b != 0)


def _prf(tp, pred, true, labels, average, pos_label, which, fn):
    """precision/recall/f1 from per-label counts, averaged as asked."""
    if average not in _AVERAGES:
        raise ValueError(f"{fn}: average must be one of 'binary', 'macro', 'micro', "
                         f"'weighted' or None, got {average!r}")

    def score(tp, pred, true):
        if which == "precision":
            return _div(tp, pred)
        if which == "recall":
            return _div(tp, true)
        return _div(2 * tp, pred + true)  # = 2PR/(P+R), 0 where P+R = 0

    if average == "binary":
        lab = labels.tolist()
        if len(lab) > 2:
            raise ValueError(f"{fn}: average='binary' needs binary targets but the labels "
                             f"are {lab}; use average='macro', 'micro' or 'weighted'")
        if pos_label not in lab:
            if len(lab) == 2:
                raise ValueError(f"{fn}: pos_label={pos_label!r} is not one of the labels {lab}")
            return 0.0
        i = lab.index(pos_label)
        return float(score(tp[i], pred[i], true[i]))
    if average == "micro":
        return float(score(tp.sum(), pred.sum(), true.sum()))
    per = score(tp, pred, true)
    if average is None:
        return per
    if per.size == 0:
        return 0.0
    if average == "macro":
        return float(per.mean())
    return float(_div((per * true).sum(), true.sum()))  # weighted by support


# ---------------------------------------------------------------------------- functions

def accuracy(y_true, y_pred, threshold: float = 0.5) -> float:
    """Fraction of correct predictions.

    ``y_pred`` (N, C) scores are compared by argmax with int labels or one-hot
    ``y_true``; (N,)/(N, 1) float scores are thresholded (``> threshold``) against 0/1
    labels; integer ``y_pred`` are labels compared directly.
    """
    t, p, _, _ = _read(y_true, y_pred, threshold, "accuracy")
    _check_nonempty(t, "accuracy")
    return float(np.mean(t == p))


def confusion_matrix(y_true, y_pred, labels=None, threshold: float = 0.5) -> np.ndarray:
    """Counts ``cm[i, j]`` of samples with true label ``labels[i]`` predicted as ``labels[j]``.

    ``labels`` (rows and columns in the order given) defaults to the sorted labels seen
    in either array, with ``0..C-1`` added when ``y_pred`` is (N, C) scores. Samples
    whose true or predicted label is not in ``labels`` are not counted. Returns an int64
    array of shape (K, K); rows are true labels, columns predicted ones.
    """
    t, p, kind, c = _read(y_true, y_pred, threshold, "confusion_matrix")
    lab = _labels(t, p, labels, "confusion_matrix")
    if labels is None and c is not None:
        lab = np.union1d(lab, np.arange(c))
    k = lab.size
    if k == 0:
        return np.zeros((0, 0), np.int64)
    sl = np.sort(lab)
    ti = np.searchsorted(sl, t).clip(0, k - 1)
    pi = np.searchsorted(sl, p).clip(0, k - 1)
    keep = (sl[ti] == t) & (sl[pi] == p)
    cm = np.bincount(ti[keep] * k + pi[keep], minlength=k * k).reshape(k, k).astype(np.int64)
    pos = np.searchsorted(sl, lab)  # rows/columns in the order labels were given
    return cm[np.ix_(pos, pos)]


def _prf_fn(which):
    def f(y_true, y_pred, average="binary", labels=None, pos_label=1, threshold=0.5):
        t, p, _, _ = _read(y_true, y_pred, threshold, which)
        _check_nonempty(t, which)
        lab = _labels(t, p, labels, which)
        return _prf(*_counts(t, p, lab), lab, average, pos_label, which, which)
    return f


_precision, _recall, _f1 = _prf_fn("precision"), _prf_fn("recall"), _prf_fn("f1_score")


def precision(y_true, y_pred, average: str | None = "binary", labels=None, pos_label: int = 1,
              threshold: float = 0.5):
    """Precision tp / (tp + fp).

    Args:
        average: "binary" (the ``pos_label`` class; the targets must have at most two
            labels), "macro" (unweighted mean over labels), "micro" (from total counts),
            "weighted" (mean weighted by each label's true count), or None (an array,
            one value per label).
        labels: the labels to score, in the order average=None reports them (default:
            the sorted labels seen in y_true or y_pred).
        pos_label: the positive class for average="binary".
        threshold: for binary scores, the prediction is ``y_pred > threshold``.
    """
    return _precision(y_true, y_pred, average, labels, pos_label, threshold)


def recall(y_true, y_pred, average: str | None = "binary", labels=None, pos_label: int = 1,
           threshold: float = 0.5):
    """Recall tp / (tp + fn); arguments as for :func:`precision`."""
    return _recall(y_true, y_pred, average, labels, pos_label, threshold)


def f1_score(y_true, y_pred, average: str | None = "binary", labels=None, pos_label: int = 1,
             threshold: float = 0.5):
    """F1 = 2 tp / (2 tp + fp + fn), the harmonic mean of precision and recall.

    "macro" averages the per-label F1 values (as scikit-learn does); "micro" is the F1
    of the total counts. Other arguments as for :func:`precision`.
    """
    return _f1(y_true, y_pred, average, labels, pos_label, threshold)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x, ties given the mean of the ranks they span."""
    n = x.size
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    first = np.empty(n, bool)
    first[:1] = True
    first[1:] = xs[1:] != xs[:-1]
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], n)
    mean_rank = (starts + ends + 1) / 2.0  # mean of starts+1 .. ends
    ranks = np.empty(n)
    ranks[order] = mean_rank[np.cumsum(first) - 1]
    return ranks


def _binary_auc(t: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney AUC of scores s for 0/1 targets t; NaN when one class is absent."""
    n_pos = int(t.sum())
    n_neg = t.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = _average_ranks(s)
    return float((r[t == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _roc_auc(y_true, y_score, average, fn, strict):
    if average not in ("macro", "micro", "weighted", None):
        raise ValueError(f"{fn}: average must be 'macro', 'micro', 'weighted' or None, "
                         f"got {average!r}")
    ys = np.asarray(y_score)
    _scores(ys, fn, "y_score")
    ys = ys.astype(np.float64)
    yt = np.asarray(y_true)
    if ys.ndim == 0 or ys.ndim > 2 or yt.ndim == 0 or yt.shape[0] != ys.shape[0]:
        raise ValueError(f"{fn}: y_score must be (N,), (N, 1) or (N, C) with y_true of N "
                         f"rows; got y_true {yt.shape}, y_score {ys.shape}")

    def undefined(msg):
        if strict:
            raise ValueError(f"{fn}: ROC AUC is undefined {msg}")
        return float("nan")

    if ys.ndim == 1 or ys.shape[1] == 1:
        if yt.ndim == 2 and yt.shape[1] != 1:
            raise ValueError(f"{fn}: y_true {yt.shape} does not match binary y_score {ys.shape}")
        t = _int_labels(yt.reshape(-1), fn, "y_true")
        if t.size and t.max() > 1:
            raise ValueError(f"{fn}: binary y_score needs 0/1 y_true, got label {int(t.max())}")
        auc = _binary_auc(t, ys.reshape(-1))
        if np.isnan(auc):
            return undefined(f"when y_true has only one class ({int(t.sum())} positives, "
                             f"{t.size - int(t.sum())} negatives)")
        return auc
    c = ys.shape[1]
    if yt.shape == ys.shape:
        y1 = _int_labels(yt, fn, "y_true")
        if y1.size and y1.max() > 1:
            raise ValueError(f"{fn}: one-hot y_true must hold 0/1 values")
    elif yt.ndim == 1 or yt.shape[1] == 1:
        t = _int_labels(yt.reshape(-1), fn, "y_true")
        if t.size and t.max() >= c:
            raise ValueError(f"{fn}: y_true has label {int(t.max())} but y_score has only "
                             f"{c} columns")
        y1 = np.zeros(ys.shape, np.int64)
        y1[np.arange(t.size), t] = 1
    else:
        raise ValueError(f"{fn}: y_true must be labels (N,) or one-hot (N, {c}), got {yt.shape}")
    if average == "micro":
        auc = _binary_auc(y1.reshape(-1), ys.reshape(-1))
        return undefined("with no positive or no negative entries") if np.isnan(auc) else auc
    per = np.array([_binary_auc(y1[:, j], ys[:, j]) for j in range(c)])
    if np.isnan(per).any():
        j = int(np.flatnonzero(np.isnan(per))[0])
        n = int(y1[:, j].sum())
        return undefined(f"for class {j} (one-vs-rest): it has {n} positives and "
                         f"{y1.shape[0] - n} negatives")
    if average is None:
        return per
    if average == "macro":
        return float(per.mean())
    w = y1.sum(axis=0).astype(np.float64)
    return float((per * w).sum() / w.sum())


def roc_auc(y_true, y_score, average: str | None = "macro"):
    """Area under the ROC curve, computed exactly from ranks (ties get average ranks).

    Binary: ``y_score`` (N,) or (N, 1) scores, ``y_true`` 0/1 labels. Multiclass:
    ``y_score`` (N, C), ``y_true`` labels (N,) or one-hot (N, C), scored one-vs-rest per
    class and averaged: "macro" (mean over classes), "weighted" (by class prevalence),
    "micro" (all one-vs-rest pairs pooled), or None (array of per-class AUCs).

    Raises ValueError when the AUC is undefined (a class with no positives or no
    negatives) or scores contain NaN.
    """
    return _roc_auc(y_true, y_score, average, "roc_auc", strict=True)


# ---------------------------------------------------------------------------- streaming

class Metric:
    """Base of streaming metrics: ``update`` per batch, ``result`` over all batches, ``reset``.

    Subclasses implement ``update(y_true, y_pred)``, ``result()`` and ``reset()`` and
    set a default ``name`` (the key under which the value appears in training logs).
    Calling the object updates it and returns the running result.
    """

    default_name = "metric"

    def __init__(self, name: str | None = None, **kwargs):
        self.name = name or self.default_name
        cls = type(self)
        keras_style = cls.update is Metric.update
        if keras_style and cls.update_state is Metric.update_state:
            raise TypeError(f"{cls.__name__} must define update_state(y_true, y_pred) (or update)")
        if cls.reset is Metric.reset and cls.reset_state is Metric.reset_state:
            raise TypeError(f"{cls.__name__} must define reset_state() (or reset)")
        if cls.result is Metric.result:
            raise TypeError(f"{cls.__name__} must define result()")
        if not keras_style:
            self.reset()

    def update(self, y_true, y_pred) -> None:
        """Accumulate one batch (a Keras-style subclass defines update_state instead)."""
        self.update_state(y_true, y_pred)

    def result(self) -> float:
        """The metric over everything accumulated since the last reset."""

    def reset(self) -> None:
        """Forget everything accumulated (a Keras-style subclass defines reset_state)."""
        self.reset_state()

    # Keras spellings
    def update_batch(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        """Training-loop update with targets the model has already validated (int32
        labels or float32 targets, no NaN); subclasses may skip the checks."""
        self.update(y_true, y_pred)

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        """Alias of :meth:`update` (Keras spelling)."""
        if sample_weight is not None:
            raise NotImplementedError(f"{self.name}: sample_weight is not supported")
        self.update(y_true, y_pred)

    def reset_state(self) -> None:
        """Alias of :meth:`reset` (Keras spelling)."""
        self.reset()

    def __call__(self, y_true, y_pred) -> float:
        """Update with one batch and return the running result."""
        self.update(y_true, y_pred)
        return self.result()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class Accuracy(Metric):
    """Running accuracy; detects sparse labels / one-hot / binary scores from the shapes.

    (N, C) predictions are compared by argmax with int labels or one-hot targets;
    (N,)/(N, 1) float predictions are thresholded at ``threshold`` against 0/1 targets.
    ``result()`` is 0.0 before any update.
    """

    default_name = "accuracy"

    def __init__(self, name: str | None = None, threshold: float = 0.5):
        self.threshold = threshold
        super().__init__(name)

    def reset(self) -> None:
        """Zero the counts."""
        self.correct = 0
        self.count = 0

    def update(self, y_true, y_pred) -> None:
        """Add one batch's correct and total counts."""
        t, p, _, _ = _read(y_true, y_pred, self.threshold, self.name)
        self.correct += int(np.count_nonzero(t == p))
        self.count += int(t.size)

    def update_batch(self, y_true, y_pred) -> None:
        if y_pred.ndim == 2 and y_pred.shape[1] > 1 and y_true.ndim == 1:
            self.correct += int(np.count_nonzero(y_pred.argmax(axis=1) == y_true))
            self.count += len(y_true)
        else:
            self.update(y_true, y_pred)

    def result(self) -> float:
        """Correct / total so far (0.0 when nothing was seen)."""
        return self.correct / self.count if self.count else 0.0


class _CountMetric(Metric):
    """Precision/recall/F1 from per-label counts accumulated over batches."""

    which = "precision"

    def __init__(self, name: str | None = None, average: str | None = "auto",
                 pos_label: int = 1, threshold: float = 0.5):
        if average not in ("auto", *_AVERAGES):
            raise ValueError(f"{type(self).__name__}: average must be 'auto', 'binary', "
                             f"'macro', 'micro', 'weighted' or None, got {average!r}")
        self.average, self.pos_label, self.threshold = average, pos_label, threshold
        super().__init__(name)

    def reset(self) -> None:
        """Zero the per-label counts."""
        self.tp = np.zeros(0, np.int64)
        self.pred = np.zeros(0, np.int64)
        self.true = np.zeros(0, np.int64)
        self._multiclass = False

    def update(self, y_true, y_pred) -> None:
        """Add one batch's per-label true positives, predicted and true counts."""
        t, p, kind, c = _read(y_true, y_pred, self.threshold, self.name)
        self._multiclass |= kind == "multiclass"
        k = max(int(t.max(initial=-1)), int(p.max(initial=-1)), (c or 0) - 1) + 1
        if k > self.tp.size:
            grow = k - self.tp.size
            self.tp, self.pred, self.true = (np.pad(a, (0, grow)) for a in
                                             (self.tp, self.pred, self.true))
        k = self.tp.size
        self.tp += np.bincount(t[t == p], minlength=k)
        self.pred += np.bincount(p, minlength=k)
        self.true += np.bincount(t, minlength=k)

    def _average(self, labels):
        if self.average != "auto":
            return self.average
        binary = not self._multiclass and set(labels.tolist()) <= {0, 1}
        return "binary" if binary else "macro"

    def result(self):
        """The metric over all batches; "auto" averaging is binary for binary scores or 0/1
        labels and macro otherwise. 0.0 before any update."""
        present = np.flatnonzero((self.pred + self.true) > 0)
        if present.size == 0:
            return 0.0 if self.average is not None else np.zeros(0)
        return _prf(self.tp[present], self.pred[present], self.true[present], present,
                    self._average(present), self.pos_label, self.which, self.name)


class Precision(_CountMetric):
    """Running precision. ``average="auto"``: binary (``pos_label``) for binary scores or
    0/1 labels, macro over the labels seen for multiclass; or any average of
    :func:`precision`."""

    default_name = "precision"
    which = "precision"


class Recall(_CountMetric):
    """Running recall; averaging as for :class:`Precision`."""

    default_name = "recall"
    which = "recall"


class F1Score(_CountMetric):
    """Running F1 score; averaging as for :class:`Precision` (macro = mean of per-label F1)."""

    default_name = "f1_score"
    which = "f1_score"


class AUC(Metric):
    """Running ROC AUC: keeps every (y_true, y_score) pair and computes the exact AUC at
    ``result()`` (see :func:`roc_auc`). ``result()`` is NaN while the AUC is undefined (no
    data yet, or a class with no positives or no negatives)."""

    default_name = "auc"

    def __init__(self, name: str | None = None, average: str | None = "macro"):
        self.average = average
        super().__init__(name)

    def reset(self) -> None:
        """Drop the stored targets and scores."""
        self._t: list[np.ndarray] = []
        self._s: list[np.ndarray] = []

    def update(self, y_true, y_pred) -> None:
        """Store one batch of targets and scores (validated now, not at result())."""
        yt, ys = np.asarray(y_true), np.asarray(y_pred)
        _roc_auc(yt, ys, self.average, self.name, strict=False)  # validates shapes/values
        ys = ys.reshape(ys.shape[0], -1).astype(np.float64)
        yt = yt.reshape(yt.shape[0], -1) if yt.ndim == 2 and yt.shape[1] > 1 else yt.reshape(-1)
        if self._s and (self._s[0].shape[1] != ys.shape[1] or self._t[0].ndim != yt.ndim):
            raise ValueError(f"{self.name}: batch shapes changed: y_true {yt.shape}, "
                             f"y_pred {ys.shape} after {self._t[0].shape[1:]}, "
                             f"{self._s[0].shape[1:]}")
        self._t.append(yt.copy())
        self._s.append(ys)

    def result(self):
        """The AUC over all stored batches (NaN when undefined)."""
        if not self._s:
            return float("nan")
        return _roc_auc(np.concatenate(self._t), np.concatenate(self._s), self.average,
                        self.name, strict=False)


class MeanMetricWrapper(Metric):
    """A metric from a function ``fn(y_true, y_pred) -> float``: its batch values averaged,
    weighted by batch size."""

    def __init__(self, fn: Callable, name: str | None = None):
        self.fn = fn
        super().__init__(name or getattr(fn, "__name__", "metric"))

    def reset(self) -> None:
        """Zero the running sum."""
        self.total = 0.0
        self.count = 0

    def update(self, y_true, y_pred) -> None:
        """Add ``fn(y_true, y_pred)`` weighted by the batch size."""
        n = int(np.shape(y_pred)[0]) if np.ndim(y_pred) else 1
        self.total += float(self.fn(y_true, y_pred)) * n
        self.count += n

    def result(self) -> float:
        """Weighted mean of the batch values (0.0 before any update)."""
        return self.total / self.count if self.count else 0.0


_REGISTRY = {
    "accuracy": Accuracy, "acc": Accuracy,
    "precision": Precision,
    "recall": Recall,
    "f1": F1Score, "f1_score": F1Score,
    "auc": AUC,
}


def get(identifier) -> Metric:
    """Resolve a metric identifier to a metric object.

    - a name: "accuracy"/"acc", "precision", "recall", "f1"/"f1_score", "auc" (case
      insensitive) gives a new object whose ``name`` is the string as given;
    - a :class:`Metric` instance is returned as is; a Metric subclass is instantiated;
    - any other callable ``fn(y_true, y_pred) -> float`` is wrapped in
      :class:`MeanMetricWrapper`.

    Raises ValueError for an unknown name (listing the valid ones), TypeError otherwise.
    """
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return identifier()
    if isinstance(identifier, str):
        cls = _REGISTRY.get(identifier.lower())
        if cls is None:
            raise ValueError(f"unknown metric {identifier!r}; valid names: "
                             f"{', '.join(_REGISTRY)}")
        return cls(name=identifier)
    if callable(identifier):
        return MeanMetricWrapper(identifier)
    raise TypeError(f"metric must be a name, a Metric or a callable, got "
                    f"{type(identifier).__name__}")
