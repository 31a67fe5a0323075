"""Train the MNIST MLP of the README's quickstart (the README's Performance section has
its measured speed)."""
import fastnn as fn

(x_train, y_train), (x_test, y_test) = fn.datasets.mnist.load_data()
x_train, x_test = x_train / 255.0, x_test / 255.0
model = fn.Sequential([
    fn.layers.Flatten(input_shape=(28, 28)),
    fn.layers.Dense(128, activation="relu"),
    fn.layers.Dense(10, activation="softmax"),
])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.summary()
history = model.fit(x_train, y_train, epochs=5, batch_size=32, validation_data=(x_test, y_test))
test_loss, test_acc = model.evaluate(x_test, y_test)
probs = model.predict(x_test)            # (10000, 10), rows sum to 1
model.save("mlp.fastnn")
same = fn.models.load_model("mlp.fastnn")  # identical predictions
assert (same.predict(x_test) == probs).all()
print(f"test accuracy {test_acc:.4f}")
