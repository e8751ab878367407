"""Builds the emulated aarch64 Debian device the tests in this directory run on.

``PYTHONPATH=tests python -m aarch64.target [--suite bookworm|trixie]`` builds it
(``make test-aarch64`` does), using only Debian's and PyPI's packages, and writes
``CACHE/target.json``, which the tests load with :meth:`aarch64.device.Target.load`.
bookworm (Debian 12, Python 3.11) is what Raspberry Pi OS (64-bit) Bookworm is built on,
trixie (Debian 13, Python 3.13) the base of Raspberry Pi OS Trixie. The cache
(``build/aarch64-SUITE``)::

    apt/          a private apt state (sources, lists, .debs): the host's dpkg is never touched
    qemu/         qemu-aarch64-static, from Debian 12's qemu-user-static (unless the host has
                  one), with its own private apt state
    sysroot/      Debian arm64 python3, python3-venv and libstdc++6 with their dependencies,
                  unpacked with dpkg-deb (:mod:`aarch64.sysroot`)
    wheels/       aarch64 wheels of fedge[edge]'s dependencies (pip download --only-binary)
    dist/         the fedge wheel built from this checkout (rebuilt every run)
    venv/         the device's venv, made as the README says: Debian's ``python3 -m venv``,
                  then the venv's own pip (the one Debian bundles for ensurepip) installs
                  ``fedge-*.whl[edge]`` from wheels/ only, resolving tags and markers as the
                  device itself does (kept while wheels, constraints and pyproject.toml are
                  the same; then only the fedge wheel is reinstalled)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aarch64.device import CPU, ENSUREPIP, Target, device_pip, probe_python
from aarch64.sysroot import (
    ROOT,
    SUITES,
    build_sysroot,
    find_qemu,
    log,
    run,
    tree_bytes,
    write_cpuinfo,
)

#: constraints.txt pins the versions resolved for this Python (the host's); a device on another
#: Python takes the newest wheels (numpy 1.26.4, say, has none for Python 3.13).
HOST_PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"
#: The extra installed on the device, exactly as in the README.
REQUIREMENT = "fedge[edge]"


# -- the wheels ------------------------------------------------------------------------------
def platforms(libc: Sequence[str], arch: str = "aarch64") -> list[str]:
    """The wheel platform tags the device's pip accepts (manylinux up to its glibc)."""
    name, version = libc
    if name != "glibc":
        raise SystemExit(f"[aarch64] the sysroot's C library is {name!r}, not glibc")
    minor = int(version.split(".")[1])
    return [*(f"manylinux_2_{m}_{arch}" for m in range(minor, 16, -1)),
            f"manylinux2014_{arch}", f"linux_{arch}"]


def pip_target_options(tags: Sequence[str], python: str) -> list[str]:
    """pip options that pick wheels for the device, never sources."""
    out = ["--only-binary=:all:", "--implementation", "cp", "--python-version", python,
           "--abi", f"cp{python.replace('.', '')}"]
    for tag in tags:
        out += ["--platform", tag]
    return out


def build_fedge_wheel(dist: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of this checkout (a stale build/lib never leaks in)."""
    shutil.rmtree(dist, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "fedge"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, src / name)
        for package in ("edge_client", "aggregator", "models", "tools"):
            shutil.copytree(ROOT / package, src / package,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", src, "-w", dist])
    (wheel,) = dist.glob("fedge-*.whl")
    return wheel


def constraints(python: str) -> list[str]:
    """``-c constraints.txt`` when the device runs the Python the pins were resolved for."""
    return ["-c", str(ROOT / "constraints.txt")] if python == HOST_PYTHON else []


def download_command(target: Target, wheels: Path, fedge: Path, tags: Sequence[str]
                     ) -> tuple[list[str], dict[str, str] | None]:
    """``pip download`` of fedge[edge]'s wheels for the device, and its environment.

    On the host's Python version, the host's pip with ``--platform`` and the pins of
    constraints.txt. On another one, the device's own pip (emulated, from the wheel Debian
    bundles): the host's pip would evaluate ``python_version`` markers against itself.
    """
    python, args = target.python_version, ["download", "-q", "-d", str(wheels)]
    if python == HOST_PYTHON:
        requirement = f"{REQUIREMENT} @ {fedge.as_uri()}"
        return ([sys.executable, "-m", "pip", *args, *pip_target_options(tags, python),
                 *constraints(python), requirement], None)
    (pip_wheel,) = (target.sysroot / "usr/share/python-wheels").glob("pip-*.whl")
    argv = target.argv("-c", ENSUREPIP, pip_wheel, *args, "--isolated", "--only-binary=:all:",
                       f"{fedge}[edge]", python=target.sysroot / "usr/bin/python3")
    return argv, target.env(wheels)


def download_wheels(target: Target, wheels: Path, fedge: Path, tags: Sequence[str]) -> None:
    """Fetches the aarch64 wheels of fedge[edge]'s dependencies; offline when all are cached."""
    wheels.mkdir(parents=True, exist_ok=True)
    argv, env = download_command(target, wheels, fedge, tags)
    offline = subprocess.run([*argv, "--no-index", "--find-links", str(wheels)], env=env,
                             capture_output=True, text=True, timeout=900)
    if offline.returncode == 0:
        log(f"wheels: cached ({wheels})")
    else:
        run(argv, env=env, timeout=900)
        log(f"wheels: downloaded into {wheels}"
            + ("" if env is None else " by the device's pip"))
    for copy in wheels.glob("fedge-*.whl"):  # pip download copies the local wheel too
        copy.unlink()


def install_key(wheels: Path, sysroot: Path) -> dict[str, Any]:
    """What the venv's dependencies follow from: the wheels, the constraints, the extras."""
    digest = hashlib.sha256()
    for path in (ROOT / "constraints.txt", ROOT / "pyproject.toml"):
        digest.update(path.read_bytes())
    return {"wheels": sorted(os.listdir(wheels)), "inputs_sha256": digest.hexdigest(),
            "debs": json.loads((sysroot / ".fedge-packages.json").read_text())["debs"]}


def install_on_device(target: Target, wheels: Path, fedge: Path) -> None:
    """The README's device install: ``python3 -m venv`` + ``pip install 'fedge.whl[edge]'``.

    When the venv was made from the same wheels, constraints and pyproject.toml, only the
    fedge wheel of this checkout is reinstalled (``--no-deps``): a warm run is faster.
    """
    stamp, key = target.venv / ".fedge-install.json", install_key(wheels, target.sysroot)
    if stamp.exists() and json.loads(stamp.read_text()) == key:
        device_pip(target, target.script("pip"), "install", "-q", "--isolated", "--no-index",
                   "--no-deps", "--force-reinstall", fedge)
        log(f"venv: dependencies cached, {fedge.name} reinstalled ({target.venv})")
        return
    shutil.rmtree(target.venv, ignore_errors=True)
    system = target.sysroot / "usr/bin/python3"
    with tempfile.TemporaryDirectory() as home:
        made = target.run("-m", "venv", "--without-pip", target.venv, home=Path(home),
                          python=system)
    if made.returncode != 0:
        raise SystemExit(f"[aarch64] python3 -m venv failed on the device:\n{made.stderr}")
    bundled = target.sysroot / "usr/share/python-wheels"
    (pip_wheel,) = bundled.glob("pip-*.whl")
    seed = ["pip", "setuptools"] if target.python_before((3, 12)) else ["pip"]  # as ensurepip
    device_pip(target, "-c", ENSUREPIP, pip_wheel, "install", "-q", "--isolated",
               "--no-index", "--find-links", bundled, *seed)
    device_pip(target, target.script("pip"), "install", "-q", "--isolated", "--no-index",
               "--find-links", wheels, *constraints(target.python_version), f"{fedge}[edge]")
    stamp.write_text(json.dumps(key, indent=1) + "\n")
    log(f"venv: made with python3 -m venv; its pip installed {fedge.name}[edge] from "
        f"{wheels} only")


#: Installed into every venv by ``python3 -m venv``, not by fedge.
VENV_SEED = ("pip", "setuptools", "_distutils_hack", "pkg_resources", "distutils-precedence.pth")


def installed_sizes(site: Path) -> dict[str, int]:
    """Bytes per top-level entry of site-packages, largest first; totals with/without pip."""
    sizes = {p.name: tree_bytes(p) if p.is_dir() else p.stat().st_size for p in site.iterdir()}
    top = dict(sorted(sizes.items(), key=lambda kv: -kv[1]))
    seed = sum(v for k, v in sizes.items() if k in VENV_SEED or k.split("-")[0] in VENV_SEED)
    return {"total": sum(sizes.values()), "without_pip_setuptools": sum(sizes.values()) - seed,
            **top}


# -- 32-bit Raspberry Pi OS: are there wheels? -----------------------------------------------
ARMV7L_PACKAGES = ("tflite-runtime", "numpy<2", "cffi", "cryptography")


def armv7l_wheel(package: str, python: str) -> str:
    """The armv7l wheel pip picks from PyPI for ``package`` on CPython ``python``, or why not."""
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--no-deps",
             "--ignore-installed", "--target", tmp, "--report", "-",
             *pip_target_options(platforms(("glibc", "2.36"), "armv7l"), python), package],
            capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        return "none" if "No matching distribution" in done.stderr else "error: " + (
            done.stderr.strip().splitlines() or ["?"])[-1]
    (item,) = json.loads(done.stdout)["install"]
    return str(item["download_info"]["url"].rsplit("/", 1)[-1])


def armv7l_report() -> dict[str, str]:
    """``{"numpy<2 cp3.11": wheel file name or "none"}`` for the 32-bit Pi's packages."""
    jobs = [(pkg, py) for pkg in ARMV7L_PACKAGES for py in ("3.9", "3.11")]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        found = list(pool.map(lambda job: armv7l_wheel(*job), jobs))
    return {f"{pkg} cp{py}": wheel for (pkg, py), wheel in zip(jobs, found, strict=True)}


# -- main --------------------------------------------------------------------------------------
def build(cache: Path, suite: str) -> Target:
    """Builds (or reuses) everything under ``cache`` and writes ``cache/target.json``."""
    started = mark = time.monotonic()
    steps: dict[str, float] = {}
    cache.mkdir(parents=True, exist_ok=True)
    qemu, sysroot = find_qemu(cache), build_sysroot(cache, suite)
    write_cpuinfo(sysroot)
    facts = {"suite": suite, "debian": SUITES[suite],
             **probe_python(Target(qemu, sysroot, cache / "venv", {}))}
    target = Target(qemu, sysroot, cache / "venv", facts)
    log(f"device: {SUITES[suite]} {facts['machine']}, Python {facts['python']}, glibc "
        f"{facts['libc'][1]}, CPU {CPU} (emulated)")
    steps["sysroot_s"], mark = round(time.monotonic() - mark, 1), time.monotonic()
    tags = platforms(facts["libc"])
    fedge = build_fedge_wheel(cache / "dist")
    download_wheels(target, cache / "wheels", fedge, tags)
    steps["wheels_s"], mark = round(time.monotonic() - mark, 1), time.monotonic()
    install_on_device(target, cache / "wheels", fedge)
    steps["device_install_s"] = round(time.monotonic() - mark, 1)
    sizes = installed_sizes(target.site)
    log(f"installed size: site-packages {sizes['total'] / 1e6:.1f} MB "
        f"({sizes['without_pip_setuptools'] / 1e6:.1f} MB without pip and setuptools)")
    armv7l = armv7l_report()
    log("armv7l (32-bit Raspberry Pi OS) wheels on PyPI: "
        + "; ".join(f"{k}: {v}" for k, v in armv7l.items()))
    steps["build_s"] = round(time.monotonic() - started, 1)
    target = Target(qemu, sysroot, target.venv, {
        **facts, "cpu": CPU, "platforms": tags, "installed_bytes": sizes,
        "sysroot_bytes": tree_bytes(sysroot),
        "debs": json.loads((sysroot / ".fedge-packages.json").read_text())["debs"],
        "wheels": sorted(os.listdir(cache / "wheels")), "armv7l": armv7l, "steps": steps})
    (cache / "target.json").write_text(json.dumps(target.describe(), indent=1) + "\n")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=sorted(SUITES), default="bookworm",
                        help="the Debian release of the device (default bookworm)")
    parser.add_argument("--cache", type=Path, help="where everything is built and kept "
                        "(default build/aarch64-SUITE)")
    args = parser.parse_args(argv)
    cache = (args.cache or ROOT / "build" / f"aarch64-{args.suite}").resolve()
    target = build(cache, args.suite)
    log(f"target ready in {target.facts['steps']['build_s']} s: {cache / 'target.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
