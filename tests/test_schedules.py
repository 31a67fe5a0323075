"""Learning-rate schedules, optimizers that follow them, and LearningRateScheduler."""
import math

import numpy as np
import pytest

import fastnn as fn
from fastnn import callbacks as C
from fastnn.optim import schedules as S


def test_cosine_decay_values():
    s = S.CosineDecay(0.1, decay_steps=100, alpha=0.2)
    assert s(0) == pytest.approx(0.1)
    assert s(50) == pytest.approx(0.1 * (0.8 * 0.5 + 0.2))
    assert s(25) == pytest.approx(0.1 * (0.8 * 0.5 * (1 + math.cos(math.pi / 4)) + 0.2))
    assert s(100) == pytest.approx(0.02)
    assert s(1000) == pytest.approx(0.02)  # constant after decay_steps
    assert S.CosineDecay(1.0, 10)(10) == 0.0


def test_exponential_decay_values():
    s = S.ExponentialDecay(0.5, decay_steps=10, decay_rate=0.1)
    assert s(0) == pytest.approx(0.5)
    assert s(5) == pytest.approx(0.5 * 0.1 ** 0.5)
    assert s(20) == pytest.approx(0.005)
    st = S.ExponentialDecay(0.5, decay_steps=10, decay_rate=0.1, staircase=True)
    assert [st(k) for k in (0, 9, 10, 19, 20)] == pytest.approx([0.5, 0.5, 0.05, 0.05, 0.005])


def test_piecewise_constant_decay_values():
    s = S.PiecewiseConstantDecay([10, 20], [1.0, 0.5, 0.1])
    assert [s(k) for k in (0, 10, 11, 20, 21, 10**6)] == [1.0, 1.0, 0.5, 0.5, 0.1, 0.1]


@pytest.mark.parametrize("make, message", [
    (lambda: S.CosineDecay(0.0, 10), "initial_learning_rate"),
    (lambda: S.CosineDecay(0.1, 0), "decay_steps"),
    (lambda: S.CosineDecay(0.1, 2.5), "decay_steps"),
    (lambda: S.CosineDecay(0.1, 10, alpha=1.5), "alpha"),
    (lambda: S.ExponentialDecay(0.1, 10, 0.0), "decay_rate"),
    (lambda: S.ExponentialDecay(float("nan"), 10, 0.5), "initial_learning_rate"),
    (lambda: S.PiecewiseConstantDecay([10, 5], [1, 2, 3]), "increase"),
    (lambda: S.PiecewiseConstantDecay([10], [1.0]), "one more"),
    (lambda: S.PiecewiseConstantDecay([10], [1.0, -1.0]), "values"),
])
def test_bad_schedule_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_optimizer_steps_with_the_scheduled_rate():
    # SGD on a constant gradient of 1: after k steps p = -(lr(0) + ... + lr(k-1)).
    sched = S.PiecewiseConstantDecay([1, 2], [0.5, 0.25, 0.125])
    opt = fn.optim.SGD(learning_rate=sched)
    opt.build(3)
    p, g = np.zeros(3, np.float32), np.ones(3, np.float32)
    expected = 0.0
    for k in range(5):
        assert opt.learning_rate == sched(k)
        expected -= sched(k)
        opt.step(p, g)
        np.testing.assert_allclose(p, expected, rtol=1e-6)
    with pytest.raises(TypeError, match="schedule"):
        opt.learning_rate = 0.1
    with pytest.raises(ValueError, match="learning_rate"):
        fn.optim.Adam(learning_rate=-1.0)


def test_schedule_survives_save_and_load(tmp_path):
    model = fn.Sequential([fn.layers.Dense(3, input_shape=(4,))], seed=0)
    model.compile(optimizer=fn.optim.Adam(S.CosineDecay(1e-2, 50, alpha=0.1)), loss="mse")
    x = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    model.fit(x, x[:, :3], epochs=2, batch_size=5, verbose=0)
    model.save(tmp_path / "m.fastnn")
    same = fn.models.load_model(tmp_path / "m.fastnn")
    assert isinstance(same.optimizer._schedule, S.CosineDecay)
    assert same.optimizer._schedule.get_config() == model.optimizer._schedule.get_config()
    assert same.optimizer.iterations == 8
    assert same.optimizer.learning_rate == pytest.approx(model.optimizer.learning_rate)


class Custom(S.LearningRateSchedule):
    def __call__(self, step):
        return 0.01

    def get_config(self):
        return {}


def test_custom_schedule_trains_but_is_refused_by_save(tmp_path):
    model = fn.Sequential([fn.layers.Dense(2, input_shape=(3,))], seed=0)
    model.compile(optimizer=fn.optim.SGD(Custom()), loss="mse")
    model.fit(np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32), verbose=0)
    with pytest.raises(ValueError, match="Custom"):
        model.save(tmp_path / "m.fastnn")
    assert not (tmp_path / "m.fastnn").exists()


def small_model(lr=0.1):
    model = fn.Sequential([fn.layers.Dense(2, input_shape=(3,))], seed=0)
    model.compile(optimizer=fn.optim.SGD(lr), loss="mse")
    return model, np.ones((8, 3), np.float32), np.zeros((8, 2), np.float32)


@pytest.mark.parametrize("schedule", [lambda epoch, lr: 0.1 * 0.5 ** epoch,
                                      lambda epoch: 0.1 * 0.5 ** epoch])
def test_learning_rate_scheduler_sets_and_logs_the_rate(schedule):
    model, x, y = small_model(lr=1.0)
    h = model.fit(x, y, epochs=3, batch_size=4, verbose=0,
                  callbacks=[C.LearningRateScheduler(schedule)])
    assert h.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.025])
    assert model.optimizer.learning_rate == pytest.approx(0.025)


def test_learning_rate_scheduler_gets_the_current_rate(capsys):
    model, x, y = small_model(lr=0.4)
    seen = []

    def halve(epoch, lr):
        seen.append(lr)
        return lr / 2

    model.fit(x, y, epochs=3, verbose=0, callbacks=[C.LearningRateScheduler(halve, verbose=1)])
    assert seen == pytest.approx([0.4, 0.2, 0.1])
    assert "Epoch 3: LearningRateScheduler setting learning rate to 0.05." in capsys.readouterr().out


def test_learning_rate_scheduler_bad_values():
    model, x, y = small_model()
    with pytest.raises(ValueError, match="epoch 2; expected a positive number"):
        model.fit(x, y, epochs=3, verbose=0,
                  callbacks=[C.LearningRateScheduler(lambda e: 0.1 if e == 0 else 0.0)])
    with pytest.raises(TypeError, match="callable"):
        C.LearningRateScheduler(0.1)
    model.compile(optimizer=fn.optim.SGD(S.CosineDecay(0.1, 10)), loss="mse")
    with pytest.raises(TypeError, match="CosineDecay"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[C.LearningRateScheduler(lambda e: 0.1)])
