"""``fedge schema``: the federation's data schema, proposed from a sample CSV or shown.

- :mod:`~tools.schema.infer`: the proposal from a sample file; bounded memory.
- :mod:`~tools.schema.view`: a schema as text.
- :mod:`~tools.schema.command`: the ``infer`` and ``show`` actions.
"""

from tools.schema.command import add_parser
from tools.schema.infer import infer_schema
from tools.schema.view import render_schema

__all__ = ["add_parser", "infer_schema", "render_schema"]
