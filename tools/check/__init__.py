"""``fedge check-model``: does a .tflite file train on the plain TFLite runtime?

- :mod:`tools.check.command`: the command (ops from the flatbuffer, then a device run);
- :mod:`tools.check.device`: the device run, in a process where TensorFlow cannot be
  imported (one ``train`` step, a ``get_weights``/``set_weights`` round trip, timings);
  not imported here: importing it blocks TensorFlow in the importing process;
- :mod:`tools.check.opnames`: builtin operator names by code, without TensorFlow.
"""

from tools.check.command import add_parser, check_model, main, operators, run
from tools.check.opnames import op_name

__all__ = ["add_parser", "check_model", "main", "op_name", "operators", "run"]
