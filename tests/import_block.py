"""Processes in which some packages cannot be imported, as on a device without them.

The one helper for every test that needs ``import tensorflow`` (or ``cryptography``) to
fail: :data:`BLOCK_TENSORFLOW` is Python source to run first in a process (``python -c``
or a script), :func:`blocked_env` an environment whose ``sitecustomize`` does the same
for any command (``python -m edge_client``).
"""

from __future__ import annotations

import os
from pathlib import Path

#: what a device never has: TensorFlow and the Keras packages that come with it
TENSORFLOW = ("tensorflow", "keras", "tf_keras")


def blocking_source(*packages: str) -> str:
    """Python source that makes importing any of ``packages`` (or below) raise ImportError."""
    return (
        "import sys\n"
        "class _Blocked:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.partition('.')[0] in {tuple(sorted(packages))!r}:\n"
        "            raise ImportError(f'{name} is blocked: this process plays a device "
        "without it')\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Blocked())\n"
    )


BLOCK_TENSORFLOW = blocking_source(*TENSORFLOW)


def blocked_env(tmp: Path, packages: tuple[str, ...] = TENSORFLOW) -> dict[str, str]:
    """``os.environ`` plus a ``sitecustomize`` (written under ``tmp``) blocking ``packages``."""
    site = tmp / ("blocked-" + "-".join(sorted(packages)))
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(blocking_source(*packages))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    return env
