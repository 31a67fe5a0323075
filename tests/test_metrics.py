"""fastnn.metrics: hand-computed cases, brute-force ROC AUC, streaming objects, bad input
(and scikit-learn as a cross-check when it happens to be installed)."""
import itertools

import numpy as np
import pytest

from fastnn import metrics as M

# ---------------------------------------------------------------- accuracy

P4 = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])  # argmax 1, 0, 1, 0


@pytest.mark.parametrize("y_true", [
    [1, 1, 1, 0],
    np.array([[1], [1], [1], [0]]),
    np.array([[0, 1], [0, 1], [0, 1], [1, 0]], dtype=np.float32),  # one-hot
    np.array([1.0, 1.0, 1.0, 0.0]),
])
def test_accuracy_multiclass_scores(y_true):
    assert M.accuracy(y_true, P4) == 0.75


@pytest.mark.parametrize("shape", [(4,), (4, 1)])
def test_accuracy_binary_scores_threshold(shape):
    s = np.array([0.2, 0.7, 0.5, 0.9], np.float32).reshape(shape)
    y = np.array([0, 1, 1, 1]).reshape(shape)
    assert M.accuracy(y, s) == 0.75  # 0.5 is not > 0.5
    assert M.accuracy(y, s, threshold=0.4) == 1.0
    assert M.accuracy(y.astype(bool), s) == 0.75


def test_accuracy_integer_predictions_are_labels():
    assert M.accuracy([0, 1, 1], np.array([0, 2, 1])) == pytest.approx(2 / 3)
    assert M.accuracy([0, 1, 2, 3], np.array([0, 1, 2, 3], np.uint8)) == 1.0


# ---------------------------------------------------------------- precision / recall / f1

YT = np.array([0, 0, 1, 1, 2, 2, 2])
YP = np.array([0, 1, 1, 1, 2, 0, 1])
# per class (hand-counted): P = 1/2, 1/2, 1;  R = 1/2, 1, 1/3;  F1 = 1/2, 2/3, 1/2
# supports 2, 2, 3; total tp = 4 of 7


def test_binary_precision_recall_f1():
    t = [1, 1, 0, 0, 1, 0]
    p = [1, 0, 1, 0, 1, 1]  # tp 2, fp 2, fn 1
    assert M.precision(t, np.array(p)) == 0.5
    assert M.recall(t, np.array(p)) == pytest.approx(2 / 3)
    assert M.f1_score(t, np.array(p)) == pytest.approx(4 / 7)
    scores = np.array([0.9, 0.1, 0.6, 0.2, 0.51, 0.99])  # same predictions
    assert M.f1_score(t, scores) == pytest.approx(4 / 7)
    # pos_label=0: tp 1 (idx 3), fp 1 (idx 1), fn 2 (idx 2, 5)
    assert M.precision(t, np.array(p), pos_label=0) == 0.5
    assert M.recall(t, np.array(p), pos_label=0) == pytest.approx(1 / 3)


@pytest.mark.parametrize("average, p, r, f", [
    ("macro", 2 / 3, 11 / 18, 5 / 9),
    ("micro", 4 / 7, 4 / 7, 4 / 7),
    ("weighted", 5 / 7, 4 / 7, 23 / 42),
])
def test_multiclass_averages(average, p, r, f):
    assert M.precision(YT, YP, average=average) == pytest.approx(p, abs=1e-15)
    assert M.recall(YT, YP, average=average) == pytest.approx(r, abs=1e-15)
    assert M.f1_score(YT, YP, average=average) == pytest.approx(f, abs=1e-15)


def test_multiclass_from_scores_and_one_hot_and_per_class():
    scores = np.eye(3)[YP] * 0.8 + 0.1
    one_hot = np.eye(3)[YT]
    assert M.f1_score(one_hot, scores, average="macro") == pytest.approx(5 / 9)
    np.testing.assert_allclose(M.precision(YT, YP, average=None), [0.5, 0.5, 1.0])
    np.testing.assert_allclose(M.recall(YT, scores, average=None), [0.5, 1.0, 1 / 3])
    np.testing.assert_allclose(M.f1_score(YT, YP, average=None), [0.5, 2 / 3, 0.5])


def test_zero_division_gives_zero():
    assert M.precision([1, 0, 1], np.array([0, 0, 0])) == 0.0   # nothing predicted positive
    assert M.recall([0, 0, 0], np.array([1, 0, 0])) == 0.0      # no true positive exists
    assert M.f1_score([0, 0], np.array([0, 0])) == 0.0          # pos_label absent
    np.testing.assert_array_equal(M.precision([0, 1], np.array([1, 1]), average=None), [0, 0.5])


def test_labels_argument_selects_labels():
    # labels present in the data but not asked for are ignored; absent labels score 0
    assert M.precision(YT, YP, average="macro", labels=[0, 1]) == 0.5
    np.testing.assert_allclose(M.recall(YT, YP, average=None, labels=[1, 2, 5]), [1, 1 / 3, 0])
    np.testing.assert_allclose(M.precision(YT, YP, average=None, labels=[2, 7, 0]), [1, 0, 0.5])
    with pytest.raises(ValueError, match="labels must be distinct"):
        M.recall(YT, YP, labels=[1, 1])
    # micro over labels {1, 2}: tp 3, predicted as 1 or 2: 4 + 1 = 5
    assert M.precision(YT, YP, average="micro", labels=[2, 1]) == pytest.approx(3 / 5)


def test_binary_average_rejects_multiclass_and_bad_pos_label():
    with pytest.raises(ValueError, match=r"average='binary' needs binary targets .*\[0, 1, 2\]"):
        M.precision(YT, YP)
    with pytest.raises(ValueError, match="pos_label=1 is not one of the labels"):
        M.recall([2, 3], np.array([3, 2]))
    with pytest.raises(ValueError, match="average must be one of"):
        M.f1_score(YT, YP, average="samples")


def test_confusion_matrix():
    cm = M.confusion_matrix(YT, YP)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 1, 1]])
    assert cm.dtype == np.int64
    # (N, C) scores: all C classes appear even if never seen
    scores = np.zeros((2, 4))
    scores[0, 1] = scores[1, 1] = 1
    np.testing.assert_array_equal(M.confusion_matrix([1, 0], scores),
                                  [[0, 1, 0, 0], [0, 1, 0, 0], [0] * 4, [0] * 4])
    np.testing.assert_array_equal(M.confusion_matrix(YT, YP, labels=[2, 0]), [[1, 1], [0, 1]])
    np.testing.assert_array_equal(M.confusion_matrix([0, 1, 1], np.array([0.2, 0.9, 0.1])),
                                  [[1, 0], [1, 1]])


# ---------------------------------------------------------------- ROC AUC

def brute_auc(t, s):
    """P(score of a random positive > score of a random negative), ties count 1/2."""
    pos, neg = s[t == 1], s[t == 0]
    return np.mean([(a > b) + 0.5 * (a == b) for a, b in itertools.product(pos, neg)])


def test_average_ranks():
    np.testing.assert_array_equal(M._average_ranks(np.array([3, 1, 3, 2, 3])), [4, 1, 4, 2, 4])
    np.testing.assert_array_equal(M._average_ranks(np.array([5.0])), [1])


def test_roc_auc_binary_hand_cases():
    assert M.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert M.roc_auc([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9]) == 0.875  # one tied pair = 1/2
    assert M.roc_auc([0, 1, 0, 1], [0.5] * 4) == 0.5
    assert M.roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert M.roc_auc(np.array([[0], [1]]), np.array([[0.3], [0.2]], np.float32)) == 0.0


def test_roc_auc_binary_matches_brute_force_with_ties():
    rng = np.random.default_rng(1)
    for n in (2, 7, 50, 301):
        t = rng.integers(0, 2, n)
        t[:2] = [0, 1]
        s = rng.integers(0, 5, n).astype(np.float64)  # many ties
        assert M.roc_auc(t, s) == pytest.approx(brute_auc(t, s), abs=1e-12)


def test_roc_auc_multiclass_one_vs_rest():
    rng = np.random.default_rng(2)
    n, c = 60, 4
    t = np.arange(n) % c
    s = rng.integers(0, 6, (n, c)).astype(np.float64)
    per = np.array([brute_auc((t == j).astype(int), s[:, j]) for j in range(c)])
    np.testing.assert_allclose(M.roc_auc(t, s, average=None), per, atol=1e-12)
    assert M.roc_auc(t, s) == pytest.approx(per.mean(), abs=1e-12)
    assert M.roc_auc(np.eye(c)[t], s) == pytest.approx(per.mean(), abs=1e-12)
    t2 = np.r_[t, np.zeros(20, int)]
    s2 = np.r_[s, rng.random((20, c))]
    per2 = np.array([brute_auc((t2 == j).astype(int), s2[:, j]) for j in range(c)])
    w = np.bincount(t2, minlength=c)
    assert M.roc_auc(t2, s2, average="weighted") == pytest.approx((per2 * w).sum() / w.sum())
    micro = brute_auc(np.eye(c, dtype=int)[t2].ravel(), s2.ravel())
    assert M.roc_auc(t2, s2, average="micro") == pytest.approx(micro, abs=1e-12)


def test_roc_auc_hand_multiclass():
    # class 0 scores separate perfectly, class 1 is reversed, class 2 is a coin flip
    t = [0, 1, 2, 0]
    s = np.array([[0.9, 0.9, 0.5], [0.1, 0.1, 0.5], [0.2, 0.8, 0.5], [0.8, 0.7, 0.5]])
    np.testing.assert_allclose(M.roc_auc(t, s, average=None), [1.0, 0.0, 0.5])


def test_roc_auc_undefined_and_bad_input():
    with pytest.raises(ValueError, match="only one class .*0 positives, 3 negatives"):
        M.roc_auc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="for class 2 .*0 positives"):
        M.roc_auc([0, 1, 0], np.ones((3, 3)))
    with pytest.raises(ValueError, match="y_score contains NaN"):
        M.roc_auc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="needs 0/1 y_true, got label 2"):
        M.roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="y_true has label 3 but y_score has only 3 columns"):
        M.roc_auc([0, 3], np.ones((2, 3)))
    with pytest.raises(ValueError, match="average must be"):
        M.roc_auc([0, 1], [0.1, 0.2], average="samples")


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("y_true, y_pred, exc, match", [
    ([0, 1, 1], np.ones((2, 2)), ValueError, r"y_true must have N = 2 rows"),
    ([0, 1], np.ones((2, 2, 2)), ValueError, r"y_pred must have shape \(N,\), \(N, 1\) or \(N, C\)"),
    ([0, 1], np.float32(0.5), ValueError, "y_pred must have shape"),
    ([0, 2], np.ones((2, 2)), ValueError, "y_true has label 2 but y_pred has only 2 columns"),
    ([0, -1], np.ones((2, 2)), ValueError, "negative label -1"),
    ([0, 0.5], np.ones((2, 2)), ValueError, "must hold integer class labels.*0.5"),
    ([0, 2], np.array([0.1, 0.9]), ValueError, "holds binary scores, so y_true must be 0/1"),
    ([0, 1], np.array([0.1, np.nan]), ValueError, "y_pred contains NaN"),
    (np.ones((2, 3)), np.ones((2, 2)), ValueError, r"labels \(N,\) or one-hot \(N, 2\)"),
    (["a", "b"], np.ones((2, 2)), TypeError, "y_true must be numeric"),
    ([], np.zeros((0, 2)), ValueError, "empty"),
])
def test_bad_input_messages(y_true, y_pred, exc, match):
    with pytest.raises(exc, match=match):
        M.accuracy(y_true, y_pred)


# ---------------------------------------------------------------- streaming objects

def batches(*arrays, size=3):
    n = len(arrays[0])
    for i in range(0, n, size):
        yield tuple(a[i:i + size] for a in arrays)


def test_streaming_accuracy_matches_function():
    rng = np.random.default_rng(3)
    t = rng.integers(0, 5, 40)
    s = rng.random((40, 5))
    m = M.Accuracy()
    assert m.result() == 0.0 and m.name == "accuracy"
    for bt, bs in batches(t, s, size=7):
        m.update(bt, bs)
    assert m.result() == M.accuracy(t, s)
    m.reset()
    assert m.result() == 0.0
    assert m(np.eye(5)[t[:4]], s[:4]) == M.accuracy(t[:4], s[:4])  # one-hot, via __call__
    b = M.Accuracy()
    b.update(np.array([[1], [0]]), np.array([[0.7], [0.2]]))
    b.update_state([1, 1], np.array([0.1, 0.9]))
    assert b.result() == 0.75


@pytest.mark.parametrize("cls, fn", [(M.Precision, M.precision), (M.Recall, M.recall),
                                     (M.F1Score, M.f1_score)])
def test_streaming_prf_matches_function(cls, fn):
    rng = np.random.default_rng(4)
    t = rng.integers(0, 4, 50)
    s = rng.random((50, 4))
    m = cls()
    for bt, bs in batches(t, s, size=8):
        m.update(bt, bs)
    assert m.result() == pytest.approx(fn(t, s, average="macro"), abs=1e-15)  # auto: macro
    for avg in ("micro", "weighted"):
        m2 = cls(average=avg)
        for bt, bs in batches(t, s, size=8):
            m2.update(bt, bs)
        assert m2.result() == pytest.approx(fn(t, s, average=avg), abs=1e-15)
    # binary scores: auto -> binary on the positive class
    tb = rng.integers(0, 2, 30)
    sb = rng.random((30, 1))
    mb = cls()
    for bt, bs in batches(tb, sb, size=4):
        mb.update(bt, bs)
    assert mb.result() == pytest.approx(fn(tb, sb), abs=1e-15)
    mb.reset()
    assert mb.result() == 0.0


def test_streaming_prf_labels_growing_across_batches():
    m = M.Precision()
    m.update([0, 1], np.array([0, 1]))        # looks binary so far
    assert m.result() == 1.0
    m.update([2, 2], np.array([2, 0]))        # a third label: auto switches to macro
    assert m.result() == pytest.approx(M.precision([0, 1, 2, 2], np.array([0, 1, 2, 0]),
                                                   average="macro"))


def test_streaming_auc():
    rng = np.random.default_rng(5)
    t = rng.integers(0, 2, 40)
    s = rng.random(40)
    m = M.AUC()
    assert np.isnan(m.result())
    m.update(t[:5] * 0, s[:5])                # one class only so far: undefined, not an error
    assert np.isnan(m.result())
    m.reset()
    for bt, bs in batches(t, s, size=6):
        m.update(bt, bs.reshape(-1, 1))
    assert m.result() == pytest.approx(M.roc_auc(t, s), abs=1e-15)
    tc = np.arange(30) % 3
    sc = rng.random((30, 3))
    mc = M.AUC(average="weighted")
    for bt, bs in batches(tc, sc, size=7):
        mc.update(bt, bs)
    assert mc.result() == pytest.approx(M.roc_auc(tc, sc, average="weighted"), abs=1e-15)
    with pytest.raises(ValueError, match="batch shapes changed"):
        mc.update([0], np.ones((1, 4)))


def test_get_resolves_names_objects_and_callables():
    for name, cls in [("accuracy", M.Accuracy), ("acc", M.Accuracy), ("ACC", M.Accuracy),
                      ("precision", M.Precision), ("recall", M.Recall), ("f1", M.F1Score),
                      ("f1_score", M.F1Score), ("auc", M.AUC)]:
        m = M.get(name)
        assert type(m) is cls and m.name == name
    assert M.get("accuracy") is not M.get("accuracy")  # new objects each time
    a = M.Recall(name="r")
    assert M.get(a) is a
    assert isinstance(M.get(M.AUC), M.AUC)

    def mae(y_true, y_pred):
        return np.mean(np.abs(np.asarray(y_true) - np.asarray(y_pred)))

    w = M.get(mae)
    assert w.name == "mae"
    w.update([0.0, 0.0], np.array([1.0, 1.0]))       # 1.0 over 2 samples
    w.update([0.0] * 4, np.array([0.0] * 4))         # 0.0 over 4 samples
    assert w.result() == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="unknown metric 'mse'; valid names: accuracy, acc, "
                                         "precision, recall, f1, f1_score, auc"):
        M.get("mse")
    with pytest.raises(TypeError, match="got int"):
        M.get(3)
    with pytest.raises(ValueError, match="average must be"):
        M.Precision(average="samples")


# ---------------------------------------------------------------- scikit-learn cross-check

def test_against_sklearn_when_installed():
    skm = pytest.importorskip("sklearn.metrics", reason="scikit-learn not installed")
    rng = np.random.default_rng(6)
    t = rng.integers(0, 5, 200)
    s = rng.random((200, 5))
    p = s.argmax(1)
    assert M.accuracy(t, s) == pytest.approx(skm.accuracy_score(t, p))
    for avg in ("macro", "micro", "weighted"):
        assert M.precision(t, s, average=avg) == pytest.approx(
            skm.precision_score(t, p, average=avg, zero_division=0))
        assert M.recall(t, s, average=avg) == pytest.approx(
            skm.recall_score(t, p, average=avg, zero_division=0))
        assert M.f1_score(t, s, average=avg) == pytest.approx(
            skm.f1_score(t, p, average=avg, zero_division=0))
    np.testing.assert_array_equal(M.confusion_matrix(t, p), skm.confusion_matrix(t, p))
    sn = s / s.sum(1, keepdims=True)
    for avg in ("macro", "weighted"):
        assert M.roc_auc(t, sn, average=avg) == pytest.approx(
            skm.roc_auc_score(t, sn, multi_class="ovr", average=avg))
    tb = rng.integers(0, 2, 200)
    sb = rng.integers(0, 10, 200) / 10
    assert M.roc_auc(tb, sb) == pytest.approx(skm.roc_auc_score(tb, sb))
