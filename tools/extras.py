"""Which optional part of fedge (a pip extra) a command needs, said before it starts.

A device installs ``fedge[edge]`` only; ``fedge demo`` needs TensorFlow (``fedge[author]``),
the aggregator's metrics need ``fedge[server]``, plots and progress bars ``fedge[tools]``.
:func:`require` checks that the modules are importable without importing them and raises
:class:`MissingExtra`, whose message is the one line the user needs: what, which extra, and
the ``pip install`` that adds it.
"""

from __future__ import annotations

import importlib.util

from edge_client.errors import FedgeError

#: module → the pip extra that installs it (pyproject.toml's optional dependencies)
EXTRA_OF: dict[str, str] = {
    "tensorflow": "author",
    "prometheus_client": "server",
    "matplotlib": "tools",
    "tqdm": "tools",
    "amqtt": "tools",
    "packaging": "tools",
    "sklearn": "datasets",
    "sktime": "datasets",
}
_ORDER = ("author", "server", "tools", "datasets")  # as pyproject.toml lists them
_INCLUDES = {"tools": {"server"}}  # fedge[tools] installs fedge[server]


class MissingExtra(FedgeError):
    """A command needs optional packages that are not installed.

    Attributes:
        extras: the pip extras that would install them, e.g. ``("author",)``.
        modules: the modules that are missing.
    """

    def __init__(self, what: str, modules: tuple[str, ...]) -> None:
        wanted = {EXTRA_OF[m] for m in modules}
        wanted -= {inner for e in wanted for inner in _INCLUDES.get(e, set())}
        self.extras = tuple(e for e in _ORDER if e in wanted)
        self.modules = modules
        names = " and ".join(f"fedge[{e}]" for e in self.extras)
        super().__init__(f"{what} needs {names}: pip install 'fedge[{','.join(self.extras)}]' "
                         f"(not installed: {', '.join(modules)})")


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (found without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing, or a broken install
        return False


def require(what: str, *modules: str) -> None:
    """Raise :class:`MissingExtra` naming ``what`` (e.g. ``"fedge demo"``) unless every one of
    ``modules`` (keys of :data:`EXTRA_OF`) is installed."""
    missing = tuple(m for m in modules if not installed(m))
    if missing:
        raise MissingExtra(what, missing)
