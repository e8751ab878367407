"""How to run a program on the emulated aarch64 device (qemu-user, the sysroot, the venv).

binfmt_misc is not mounted on every machine (not on this project's), so nothing relies on it:
an emulated program is started as ``qemu-aarch64-static -L SYSROOT VENV/bin/python3 ...``.
Such a program cannot start another aarch64 program (that needs binfmt_misc); fedge-client
never does, and the one step of ``python3 -m venv`` that does (ensurepip runs pip in a child
process) is done in-process instead (:data:`ENSUREPIP`). A file missing from the sysroot is
looked up on the host by qemu (``/etc/hosts``, ``/etc/localtime``): pip runs with
``--isolated`` so that the host's pip configuration does not leak in. The CPU is a
Cortex-A72, the Raspberry Pi 4's, so numpy and the TFLite kernels take a Pi 4's code paths;
``SYSROOT/proc/cpuinfo`` describes the same cores (:func:`aarch64.sysroot.write_cpuinfo`).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CPU = "cortex-a72"  # Raspberry Pi 4


@dataclass(frozen=True)
class Target:
    """How to run a program on the emulated aarch64 device; loaded from ``target.json``."""

    qemu: Path
    sysroot: Path
    venv: Path
    facts: dict[str, Any]

    @property
    def python_version(self) -> str:
        """The device's Python as major.minor (``3.11``)."""
        return ".".join(str(self.facts["python"]).split(".")[:2])

    def python_before(self, version: tuple[int, int]) -> bool:
        """Whether the device's Python is older than ``version``."""
        return tuple(int(v) for v in self.python_version.split(".")) < version

    @property
    def runtime(self) -> str:
        """The TFLite runtime fedge[edge] installs on this Python (see pyproject.toml)."""
        return "tflite_runtime" if self.python_before((3, 12)) else "ai_edge_litert"

    @property
    def site(self) -> Path:
        """The venv's site-packages: what ``pip install fedge[edge]`` put on the device."""
        return self.venv / "lib" / f"python{self.python_version}" / "site-packages"

    def argv(self, *args: str | Path, python: Path | None = None) -> list[str]:
        """``VENV/bin/python3 ARGS`` on the device (or another aarch64 ``python``)."""
        exe = python or self.venv / "bin" / "python3"
        return [str(a) for a in (self.qemu, "-cpu", CPU, "-L", self.sysroot, exe, *args)]

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        """A device's environment: nothing of the host's Python (PYTHONPATH, PIP_*) leaks in."""
        return {"PATH": f"{self.venv}/bin:/usr/bin:/bin", "HOME": str(home), "LC_ALL": "C.UTF-8",
                "PYTHONDONTWRITEBYTECODE": "1", **extra}

    def run(self, *args: str | Path, home: Path, timeout: float = 300,
            python: Path | None = None, **extra: str) -> subprocess.CompletedProcess[str]:
        """Runs ``python3 ARGS`` on the device and returns what it printed."""
        return subprocess.run(self.argv(*args, python=python), env=self.env(home, **extra),
                              capture_output=True, text=True, timeout=timeout)

    def script(self, name: str) -> Path:
        """A console script of the venv (``fedge-client``), run as ``python3 SCRIPT``."""
        return self.venv / "bin" / name

    def describe(self) -> dict[str, Any]:
        return {"qemu": str(self.qemu), "sysroot": str(self.sysroot), "venv": str(self.venv),
                **self.facts}

    @classmethod
    def load(cls, path: Path) -> Target:
        """The target ``target.py`` built (its ``target.json``)."""
        d = json.loads(path.read_text())
        return cls(Path(d.pop("qemu")), Path(d.pop("sysroot")), Path(d.pop("venv")), d)


def probe_python(target: Target) -> dict[str, Any]:
    """What the emulated interpreter says it is (machine, version, glibc)."""
    code = ("import json, platform, sys; print(json.dumps({'machine': platform.machine(), "
            "'python': platform.python_version(), 'libc': platform.libc_ver()}))")
    with tempfile.TemporaryDirectory() as home:
        done = target.run("-c", code, home=Path(home), timeout=120,
                          python=target.sysroot / "usr/bin/python3")
    if done.returncode != 0:
        raise SystemExit(f"[aarch64] the arm64 python does not start under qemu:\n{done.stderr}")
    facts: dict[str, Any] = json.loads(done.stdout)
    if facts["machine"] != "aarch64":
        raise SystemExit(f"[aarch64] expected an aarch64 Python, got {facts}")
    return facts


#: What ``python3 -m venv`` has ensurepip do in a child process, done in-process.
ENSUREPIP = ("import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
             "runpy.run_module('pip', run_name='__main__', alter_sys=True)")


def device_pip(target: Target, *args: str | Path) -> None:
    """Runs pip on the device (emulated); on failure raises SystemExit with its output."""
    with tempfile.TemporaryDirectory() as home:
        done = target.run(*args, home=Path(home), timeout=900)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise SystemExit(f"[aarch64] pip on the device failed ({done.returncode}):\n{tail}")
