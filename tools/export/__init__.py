"""``fedge export``: model files from the zoo or from an aggregator's state dir.

- :mod:`~tools.export.command`: the command and its flags.
- :mod:`~tools.export.from_state`: a state dir's model with any version's weights embedded
  (what the aggregator writes as ``final/model.tflite``), or those weights as ``.npz``.
- :mod:`~tools.export.int8`: the int8 inference model and its calibration examples.
"""

from tools.export.command import add_parser, main, run
from tools.export.from_state import export_from_state
from tools.export.int8 import FALLBACK_EXAMPLES, SAME_FILE, Calibration, int8_model

__all__ = ["FALLBACK_EXAMPLES", "SAME_FILE", "Calibration", "add_parser", "export_from_state",
           "int8_model", "main", "run"]
