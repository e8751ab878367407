"""Writes benchmark sections into ``docs/results.md`` between stable markers."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

_PACKAGES = ("numpy", "tflite-runtime", "tensorflow-cpu", "paho-mqtt", "flwr", "cbor2")
HEADER = "# fedge results\n\nFigures written by `fedge bench` (`make bench`); each section is "\
    "replaced by the run that measured it, with its date and machine.\n"


def machine_description() -> dict[str, Any]:
    """What ran the benchmark: CPU, cores, memory, Python and package versions, date."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_gib, 1),
        "python": platform.python_version(), "platform": platform.platform(),
        "versions": versions,
    }


def _machine_line(machine: dict[str, Any]) -> str:
    v = ", ".join(f"{k} {val}" for k, val in machine["versions"].items())
    return (f"_Measured {machine['date']} on {machine['cpu']}, {machine['cores']} cores, "
            f"{machine['memory_gib']} GiB, Python {machine['python']}; {v}._\n")


def update_results(path: Path, sections: dict[str, str], machine: dict[str, Any]) -> None:
    """Replaces (or appends) each named section of ``path`` between its markers."""
    text = path.read_text() if path.exists() else HEADER
    for name, body in sections.items():
        start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
        block = f"{start}\n{body.rstrip()}\n\n{_machine_line(machine)}{end}"
        i, j = text.find(start), text.find(end)
        if 0 <= i < j:
            text = text[:i] + block + text[j + len(end):]
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
