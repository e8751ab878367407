"""Write examples/seed.keras: the seed article's model, exactly as its §5.2–5.3 builds it.

``tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,), activation='sigmoid')])``
compiled with ``SGD(0.01)`` and ``binary_crossentropy``. Weights seeded (0) so the file is
reproducible. Run: ``python examples/seed_model.py`` (needs fedge[author]); then
``fedge export --keras examples/seed.keras --batch-size 32 --out seed.tflite``.
"""

from __future__ import annotations

import sys
from pathlib import Path

OUT = Path(__file__).with_name("seed.keras")


def main(out: Path = OUT) -> int:
    """Build, compile and save the article's model to ``out``."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.layers.Input((2,)),
                                 tf.keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss="binary_crossentropy",
                  metrics=["accuracy"])
    model.save(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
