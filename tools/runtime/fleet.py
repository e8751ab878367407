"""Starts fedge processes (aggregator, clients) and makes sure none outlives us.

Each child runs in its own session (process group), writes its log to a file,
and is stopped with SIGTERM, then SIGKILL, by :meth:`Fleet.close`, which runs on
normal exit, on an exception and on Ctrl-C (the caller uses it as a context
manager), so a demo never leaves orphans behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)


@dataclass
class Child:
    """One started process and its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 20) -> str:
        """The last lines of the child's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Fleet:
    """A set of child processes that are all stopped on :meth:`close`."""

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.children: list[Child] = []
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    def start(self, name: str, module: str, args: list[str]) -> Child:
        """Starts ``python -m module args...`` with output to ``log_dir/name.log``."""
        return self.run(name, ["-m", module, *args])

    def run(self, name: str, args: list[str]) -> Child:
        """Starts ``python args...`` (a script or ``-m module``) with output to
        ``log_dir/name.log``."""
        path = self.log_dir / f"{name}.log"
        with open(path, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, *args], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self.env, start_new_session=True,
            )
        child = Child(name, proc, path)
        self.children.append(child)
        return child

    def failed(self) -> list[Child]:
        """Children that exited with a non-zero code."""
        return [c for c in self.children if c.proc.poll() not in (None, 0)]

    def stop(self, child: Child, timeout: float = 10.0) -> None:
        """SIGTERM to the child's process group, SIGKILL after ``timeout``."""
        if child.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.proc.pid, signal.SIGTERM)
            try:
                child.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGKILL)
                child.proc.wait(timeout)

    def close(self) -> None:
        """Stops every child that is still running."""
        for child in reversed(self.children):
            self.stop(child)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
