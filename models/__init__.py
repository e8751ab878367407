"""Model authoring (TensorFlow): the zoo, its builtin-only layers, and the exporter.

Imports nothing from the rest of fedge. ``models.zoo`` and ``models.architecture``
need no TensorFlow; ``models.export`` does.
"""
