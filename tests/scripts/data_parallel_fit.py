"""Training steps of SCAN on one device and under DataParallel on two.

Run in a fresh process: the two virtual CPU devices must be requested
before JAX starts.
"""

import json
import os

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from scan_keras.models import SCAN  # noqa: E402

rng = np.random.default_rng(0)
lengths = rng.integers(2, 8, size=48)
token_ids = rng.integers(1, 20, size=(48, 7)) * (np.arange(7) < lengths[:, None])
batch = {
    "features": rng.normal(size=(48, 5, 12)).astype("float32"),
    "token_ids": token_ids.astype("int32"),
}


def build(distribution):
    keras.distribution.set_distribution(distribution)
    model = SCAN(vocab_size=20, img_dim=12, embed_size=16, word_dim=8)
    model.build()
    model.compile(optimizer=keras.optimizers.SGD(0.1, global_clipnorm=2.0))
    return model


data_parallel = keras.distribution.DataParallel(devices=jax.devices())
single, parallel = build(None), build(data_parallel)
# Step by step from the same weights, so that each step's loss and update
# are compared on their own (hardest negatives are a max: over many steps,
# last-bit differences could pick another negative and the runs drift).
result = {"devices": len(jax.devices()), "single": [], "parallel": [], "weights": []}
for step in range(3):
    rows = slice(16 * step, 16 * step + 16)
    x = {name: value[rows] for name, value in batch.items()}
    parallel.set_weights(single.get_weights())
    keras.distribution.set_distribution(None)
    result["single"].append(float(single.train_on_batch(x)))
    keras.distribution.set_distribution(data_parallel)
    result["parallel"].append(float(parallel.train_on_batch(x)))
    result["weights"].append(
        max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(single.get_weights(), parallel.get_weights())
        )
    )
kernel = parallel.image_encoder.fc.kernel.value
result["kernel_devices"] = len(kernel.sharding.device_set)
print(json.dumps(result))
