"""Model authoring (TensorFlow): the zoo, its builtin-only layers, and the exporter.

Imports nothing from the rest of fedge. ``models.zoo`` and ``models.architecture``
need no TensorFlow; ``models.export`` does. Nothing is re-exported here: import from
the modules, whose names are the public names of the package.
"""

__all__ = [
    "architecture",  # layer specifications and shape inference (no TensorFlow)
    "export",  # zoo and imported models to self-describing .tflite files (TensorFlow)
    "keras_import",  # saved Keras 3 models onto the layer library, with their weights
    "layers",  # layers whose gradients are TFLite builtins
    "losses",  # per-example losses written by hand
    "metadata",  # the metadata a model file carries (no TensorFlow)
    "modules",  # the TensorFlow modules that become .tflite files
    "optimizers",  # in-graph SGD and Adam
    "zoo",  # the model zoo: shapes and initial weights (no TensorFlow)
]
