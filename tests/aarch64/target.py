"""An aarch64 Debian device on this x86 machine: Debian's arm64 Python under qemu-user.

``python tests/aarch64/target.py [--suite bookworm|trixie]`` builds it (``make test-aarch64``
does), using only Debian's and PyPI's packages, and writes ``CACHE/target.json``, which the
tests in this directory load with :meth:`Target.load`. bookworm (Debian 12, Python 3.11) is
what Raspberry Pi OS (64-bit) Bookworm is built on, trixie (Debian 13, Python 3.13) the base
of Raspberry Pi OS Trixie. Layout of the cache (``build/aarch64-SUITE``)::

    apt/          a private apt state (sources, lists, .debs): the host's dpkg is never touched
    qemu/         qemu-aarch64-static, from Debian 12's qemu-user-static (unless the host has
                  one), with its own private apt state
    sysroot/      Debian arm64 python3, python3-venv and libstdc++6 with their
                  dependencies, unpacked with dpkg-deb (no maintainer scripts run; none are
                  needed to run python)
    wheels/       aarch64 wheels of fedge[edge]'s dependencies (pip download --only-binary)
    dist/         the fedge wheel built from this checkout (rebuilt every run)
    venv/         the device's venv, made as the README says: Debian's ``python3 -m venv``,
                  then the venv's own pip (the one Debian bundles for ensurepip) installs
                  ``fedge-*.whl[edge]`` from wheels/ only, resolving tags and markers as the
                  device itself does (kept while wheels, constraints and pyproject.toml are
                  the same; then only the fedge wheel is reinstalled)

binfmt_misc is not mounted on every machine (not on this project's), so nothing relies on it:
an emulated program is started as ``qemu-aarch64-static -L SYSROOT VENV/bin/python3 ...``.
Such a program cannot start another aarch64 program (that needs binfmt_misc); fedge-client
never does, and the one step of ``python3 -m venv`` that does (ensurepip runs pip in a child
process) is done in-process instead, exactly as ensurepip does it. A file missing from the
sysroot is looked up on the host by qemu (``/etc/hosts``, ``/etc/localtime``): pip runs with
``--isolated`` so that the host's pip configuration does not leak in. The CPU is a
Cortex-A72, the Raspberry Pi 4's, so numpy and the TFLite kernels take a Pi 4's code paths;
``SYSROOT/proc/cpuinfo`` describes the same cores (:func:`write_cpuinfo`).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
#: Debian releases a target can be built from, and what Raspberry Pi OS release each is.
SUITES = {"bookworm": "Debian 12 (Raspberry Pi OS Bookworm)",
          "trixie": "Debian 13 (Raspberry Pi OS Trixie)"}
QEMU_SUITE = "bookworm"  # qemu-user-static comes from the host's release (it is static)
MIRROR = os.environ.get("FEDGE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SECURITY = os.environ.get("FEDGE_DEBIAN_SECURITY", "http://deb.debian.org/debian-security")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
#: What the device has besides the wheels: Python with venv, and the C++ runtime of
#: tflite_runtime; Raspberry Pi OS (64-bit) has them all preinstalled.
DEBIAN_PACKAGES = ("python3", "python3-venv", "libstdc++6")
#: constraints.txt pins the versions resolved for this Python (the host's); a device on another
#: Python takes the newest wheels (numpy 1.26.4, say, has none for Python 3.13).
HOST_PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"
CPU = "cortex-a72"  # Raspberry Pi 4
#: The extra installed on the device, exactly as in the README.
REQUIREMENT = "fedge[edge]"


def log(message: str) -> None:
    """Progress on stdout, flushed (make shows it as it happens)."""
    print(f"[aarch64] {message}", flush=True)


def run(argv: Sequence[str | Path], **kw: Any) -> subprocess.CompletedProcess[str]:
    """Runs a host command; on failure raises SystemExit with its output."""
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise SystemExit(f"[aarch64] failed ({done.returncode}): {' '.join(map(str, argv))}\n"
                         f"{tail}")
    return done


# -- Debian packages, with a private apt -----------------------------------------------------
def host_arch() -> str:
    """The host's Debian architecture (amd64 here)."""
    return run(["dpkg", "--print-architecture"]).stdout.strip()


def apt_options(apt: Path) -> list[str]:
    """apt-get options that keep every file of apt's under ``apt`` and resolve for arm64."""
    opts = {
        "Dir::Etc::SourceList": apt / "sources.list", "Dir::Etc::SourceParts": apt / "empty",
        "Dir::Etc::Preferences": apt / "empty" / "none",
        "Dir::Etc::PreferencesParts": apt / "empty",
        "Dir::State": apt, "Dir::State::Lists": apt / "lists",
        "Dir::State::status": apt / "status",  # empty: nothing is installed, so all is resolved
        "Dir::Cache": apt / "cache", "Dir::Cache::archives": apt / "archives",
        "APT::Architecture": "arm64", "Debug::NoLocking": "1",
    }
    if os.geteuid() == 0:  # files under build/ are not writable by apt's _apt sandbox user
        opts["APT::Sandbox::User"] = "root"
    out = [f"-o{k}={v}" for k, v in opts.items()]
    return [*out, "-oAPT::Architectures::=arm64", f"-oAPT::Architectures::={host_arch()}"]


def apt_update(apt: Path, suite: str) -> list[str]:
    """Writes private sources (``suite`` + updates + security) and fetches their lists."""
    if not KEYRING.exists():
        raise SystemExit(f"[aarch64] {KEYRING} is missing: apt-get install debian-archive-keyring")
    for sub in ("lists/partial", "archives/partial", "cache", "empty"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "status").touch()
    opts = f"[arch=arm64,{host_arch()} signed-by={KEYRING}]"
    (apt / "sources.list").write_text(
        f"deb {opts} {MIRROR} {suite} main\n"
        f"deb {opts} {MIRROR} {suite}-updates main\n"
        f"deb {opts} {SECURITY} {suite}-security main\n")
    options = apt_options(apt)
    run(["apt-get", *options, "-q", "update"])
    return options


def build_sysroot(cache: Path, suite: str) -> Path:
    """Debian ``suite``'s arm64 python3 (+ dependencies) unpacked into ``cache/sysroot``, once."""
    sysroot, stamp = cache / "sysroot", cache / "sysroot" / ".fedge-packages.json"
    wanted = {"suite": suite, "requested": list(DEBIAN_PACKAGES)}
    if stamp.exists() and {k: json.loads(stamp.read_text()).get(k) for k in wanted} == wanted:
        log(f"sysroot: cached ({sysroot})")
        return sysroot
    apt = cache / "apt"
    options = apt_update(apt, suite)
    for old in (apt / "archives").glob("*.deb"):
        old.unlink()
    run(["apt-get", *options, "-q", "-y", "--download-only", "--no-install-recommends",
         "install", *DEBIAN_PACKAGES])
    debs = sorted((apt / "archives").glob("*.deb"))
    tmp = cache / "sysroot.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for deb in debs:
        run(["dpkg-deb", "-x", deb, tmp])
    for top in ("bin", "sbin", "lib"):  # merged /usr: from Debian 13 packages ship only /usr
        if not (tmp / top).exists():  # (base-files, not needed here, makes the links)
            (tmp / top).symlink_to(f"usr/{top}")
    (tmp / stamp.name).write_text(json.dumps(
        {**wanted, "debs": [d.name for d in debs]}, indent=1))
    shutil.rmtree(sysroot, ignore_errors=True)
    tmp.rename(sysroot)
    log(f"sysroot: {len(debs)} Debian {suite} arm64 packages unpacked into {sysroot} "
        f"({tree_bytes(sysroot) / 1e6:.0f} MB)")
    return sysroot


def cpu_count_present() -> int:
    """CPUs in the host's ``/sys/devices/system/cpu/present`` (which the device sees too)."""
    try:
        spans = Path("/sys/devices/system/cpu/present").read_text().strip().split(",")
    except OSError:
        return os.cpu_count() or 1
    ends = [tuple(int(x) for x in span.split("-")) for span in spans if span]
    return sum(e[-1] - e[0] + 1 for e in ends)


def write_cpuinfo(sysroot: Path) -> None:
    """A Raspberry Pi 4's ``/proc/cpuinfo`` (Cortex-A72 cores) in the sysroot.

    qemu-user 7.2 passes the host's x86 ``/proc/cpuinfo`` through, and a program that parses
    it for ARM cores (the cpuinfo library in ai-edge-litert) crashes on it. qemu looks paths
    up in the sysroot first, so the device reads this file: the cores qemu emulates.
    """
    core = ("processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
            "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n"
            "CPU part\t: 0xd08\nCPU revision\t: 3\n")
    cores = "\n".join(core.format(i=i) for i in range(cpu_count_present()))
    (sysroot / "proc").mkdir(exist_ok=True)
    (sysroot / "proc" / "cpuinfo").write_text(
        f"{cores}\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B (emulated)\n")


def find_qemu(cache: Path) -> Path:
    """The host's qemu-aarch64-static, else the one in Debian's qemu-user-static, extracted."""
    found = shutil.which("qemu-aarch64-static")
    if found:
        log(f"qemu: {found} (host)")
        return Path(found)
    binary = cache / "qemu" / "qemu-aarch64-static"
    if not binary.exists():
        options = apt_update(cache / "qemu" / "apt", QEMU_SUITE)
        with tempfile.TemporaryDirectory() as tmp:
            run(["apt-get", *options, "-q", "download", f"qemu-user-static:{host_arch()}"],
                cwd=tmp)
            (deb,) = Path(tmp).glob("*.deb")
            run(["dpkg-deb", "-x", deb, Path(tmp) / "x"])
            binary.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(tmp) / "x/usr/bin/qemu-aarch64-static", binary)
    log(f"qemu: {binary} (from Debian's qemu-user-static)")
    return binary


# -- the target ------------------------------------------------------------------------------
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


#: What ``python3 -m venv`` has ensurepip do in a child process, done in-process.
ENSUREPIP = ("import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
             "runpy.run_module('pip', run_name='__main__', alter_sys=True)")


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


def device_pip(target: Target, *args: str | Path) -> None:
    """Runs pip on the device (emulated); on failure raises SystemExit with its output."""
    with tempfile.TemporaryDirectory() as home:
        done = target.run(*args, home=Path(home), timeout=900)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise SystemExit(f"[aarch64] pip on the device failed ({done.returncode}):\n{tail}")


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


def tree_bytes(path: Path) -> int:
    """Apparent size of every regular file under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


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
