"""The deeper MNIST MLP (784-128-64-10) with Adam whose learning rate follows a cosine
from 2e-3 down to 0 over the whole run, one value per step: the recipe behind the
README's 0.98 row (`python -m fastnn train mnist-mlp --hidden 128,64 --batch-size 128
--epochs 10 --lr 2e-3 --schedule cosine` runs the same model)."""
import math

import fastnn as fn

(x_train, y_train), (x_test, y_test) = fn.datasets.mnist.load_data()
x_train, x_test = x_train / 255.0, x_test / 255.0
epochs, batch_size = 10, 128
steps = epochs * math.ceil(len(x_train) / batch_size)

model = fn.Sequential([
    fn.layers.Flatten(input_shape=(28, 28)),
    fn.layers.Dense(128, activation="relu"),
    fn.layers.Dense(64, activation="relu"),
    fn.layers.Dense(10, activation="softmax"),
], seed=0)
schedule = fn.optim.schedules.CosineDecay(2e-3, decay_steps=steps)
model.compile(optimizer=fn.optim.Adam(learning_rate=schedule),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, seed=0)
test_loss, test_acc = model.evaluate(x_test, y_test)
print(f"test accuracy {test_acc:.4f}; learning rate now {model.optimizer.learning_rate:.2e}")
