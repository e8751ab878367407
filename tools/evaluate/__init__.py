"""``fedge evaluate`` and ``fedge predict``: the final model on data it never trained on.

- :mod:`~tools.evaluate.command`: ``fedge evaluate``, the scores of a labelled file.
- :mod:`~tools.evaluate.predict`: ``fedge predict``, one CSV row of predictions per input.
- :mod:`~tools.evaluate.predictor`: the model file and the weights it runs with (an
  aggregator state dir's, embedded ones, or an int8 inference file's).
- :mod:`~tools.evaluate.scaling`: which feature scaling the inputs get (a device's kept
  statistics, or none), said every time.
- :mod:`~tools.evaluate.report`: the JSON report and the printed one
  (scores from :mod:`edge_client.scoring`).
- :mod:`~tools.evaluate.plot`: the ``--plot`` PNG.
"""

from tools.evaluate.predictor import Predictor, open_model
from tools.evaluate.report import document, roc_points, scores, text
from tools.evaluate.scaling import Scaling, unscaled_warning

__all__ = ["Predictor", "Scaling", "document", "open_model", "roc_points", "scores", "text",
           "unscaled_warning"]
