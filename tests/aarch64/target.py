"""An aarch64 Debian 12 device on this x86 machine: Debian's arm64 Python under qemu-user.

``python tests/aarch64/target.py --cache build/aarch64`` builds it (``make test-aarch64`` does),
using only Debian's and PyPI's packages, and writes ``CACHE/target.json``, which the tests in
this directory load with :meth:`Target.load`. Layout of the cache::

    apt/          a private apt state (sources, lists, .debs): the host's dpkg is never touched
    qemu/         qemu-aarch64-static, from Debian's qemu-user-static (unless the host has one)
    sysroot/      Debian 12 arm64 python3.11 and libstdc++6 with their dependencies, unpacked
                  with dpkg-deb (no maintainer scripts run; none are needed to run python)
    wheels/       aarch64 wheels of fedge[edge]'s dependencies (pip download --only-binary)
    dist/         the fedge wheel built from this checkout (rebuilt every run)
    venv/         the device's venv, made as the README says (rebuilt every run): Debian's
                  ``python3 -m venv``, then the venv's own pip (Debian's bundled pip 23.0.1)
                  installs ``fedge-*.whl[edge]`` from wheels/ only, resolving tags and markers
                  as the device itself does

binfmt_misc is not mounted on every machine (not on this project's), so nothing relies on it:
an emulated program is started as ``qemu-aarch64-static -L SYSROOT VENV/bin/python3 ...``.
Such a program cannot start another aarch64 program (that needs binfmt_misc); fedge-client
never does, and the one step of ``python3 -m venv`` that does (ensurepip runs pip in a child
process) is done in-process instead, exactly as ensurepip does it. A file missing from the
sysroot is looked up on the host by qemu (``/etc/hosts``, ``/etc/localtime``): pip runs with
``--isolated`` so that the host's pip configuration does not leak in. The CPU is a
Cortex-A72, the Raspberry Pi 4's, so numpy and the TFLite kernels take a Pi 4's code paths.
"""

from __future__ import annotations

import argparse
import concurrent.futures
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
SUITE = "bookworm"  # Debian 12, what Raspberry Pi OS (64-bit) is built on
MIRROR = os.environ.get("FEDGE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SECURITY = os.environ.get("FEDGE_DEBIAN_SECURITY", "http://deb.debian.org/debian-security")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
#: What the device has besides the wheels: Python with venv, and the C++ runtime of
#: tflite_runtime; Raspberry Pi OS (64-bit) has them all preinstalled.
DEBIAN_PACKAGES = ("python3", "python3-venv", "libstdc++6")
PYTHON = "3.11"
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


def apt_update(apt: Path) -> list[str]:
    """Writes the private sources (Debian 12 + updates + security) and fetches their lists."""
    if not KEYRING.exists():
        raise SystemExit(f"[aarch64] {KEYRING} is missing: apt-get install debian-archive-keyring")
    for sub in ("lists/partial", "archives/partial", "cache", "empty"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "status").touch()
    opts = f"[arch=arm64,{host_arch()} signed-by={KEYRING}]"
    (apt / "sources.list").write_text(
        f"deb {opts} {MIRROR} {SUITE} main\n"
        f"deb {opts} {MIRROR} {SUITE}-updates main\n"
        f"deb {opts} {SECURITY} {SUITE}-security main\n")
    options = apt_options(apt)
    run(["apt-get", *options, "-q", "update"])
    return options


def build_sysroot(cache: Path) -> Path:
    """Debian 12 arm64 python3.11 (+ dependencies) unpacked into ``cache/sysroot``, once."""
    sysroot, stamp = cache / "sysroot", cache / "sysroot" / ".fedge-packages.json"
    if stamp.exists() and json.loads(stamp.read_text())["requested"] == list(DEBIAN_PACKAGES):
        log(f"sysroot: cached ({sysroot})")
        return sysroot
    apt = cache / "apt"
    options = apt_update(apt)
    for old in (apt / "archives").glob("*.deb"):
        old.unlink()
    run(["apt-get", *options, "-q", "-y", "--download-only", "--no-install-recommends",
         "install", *DEBIAN_PACKAGES])
    debs = sorted((apt / "archives").glob("*.deb"))
    tmp = cache / "sysroot.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for deb in debs:
        run(["dpkg-deb", "-x", deb, tmp])
    (tmp / stamp.name).write_text(json.dumps(
        {"requested": list(DEBIAN_PACKAGES), "debs": [d.name for d in debs]}, indent=1))
    shutil.rmtree(sysroot, ignore_errors=True)
    tmp.rename(sysroot)
    log(f"sysroot: {len(debs)} Debian arm64 packages unpacked into {sysroot} "
        f"({tree_bytes(sysroot) / 1e6:.0f} MB)")
    return sysroot


def find_qemu(cache: Path) -> Path:
    """The host's qemu-aarch64-static, else the one in Debian's qemu-user-static, extracted."""
    found = shutil.which("qemu-aarch64-static")
    if found:
        log(f"qemu: {found} (host)")
        return Path(found)
    binary = cache / "qemu" / "qemu-aarch64-static"
    if not binary.exists():
        apt = cache / "apt"
        options = apt_options(apt) if (apt / "sources.list").exists() else apt_update(apt)
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
    def site(self) -> Path:
        """The venv's site-packages: what ``pip install fedge[edge]`` put on the device."""
        return self.venv / "lib" / f"python{PYTHON}" / "site-packages"

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
    if facts["machine"] != "aarch64" or not facts["python"].startswith(PYTHON):
        raise SystemExit(f"[aarch64] expected aarch64 Python {PYTHON}, got {facts}")
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


def pip_target_options(tags: Sequence[str], python: str = PYTHON) -> list[str]:
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


def download_wheels(wheels: Path, fedge: Path, tags: Sequence[str]) -> None:
    """Fetches the aarch64 wheels of fedge[edge]'s dependencies; offline when all are cached."""
    requirement = f"{REQUIREMENT} @ {fedge.as_uri()}"
    base = [sys.executable, "-m", "pip", "download", "-q", "-d", str(wheels),
            *pip_target_options(tags), "-c", str(ROOT / "constraints.txt"), requirement]
    wheels.mkdir(parents=True, exist_ok=True)
    offline = subprocess.run([*base, "--no-index", "--find-links", str(wheels)],
                             capture_output=True, text=True)
    if offline.returncode == 0:
        log(f"wheels: cached ({wheels})")
    else:
        run(base)
        log(f"wheels: downloaded into {wheels}")
    for copy in wheels.glob("fedge-*.whl"):  # pip download copies the local wheel too
        copy.unlink()


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


def install_on_device(target: Target, wheels: Path, fedge: Path) -> None:
    """The README's device install: ``python3 -m venv`` + ``pip install 'fedge.whl[edge]'``."""
    shutil.rmtree(target.venv, ignore_errors=True)
    system = target.sysroot / "usr/bin/python3"
    with tempfile.TemporaryDirectory() as home:
        made = target.run("-m", "venv", "--without-pip", target.venv, home=Path(home),
                          python=system)
    if made.returncode != 0:
        raise SystemExit(f"[aarch64] python3 -m venv failed on the device:\n{made.stderr}")
    bundled = target.sysroot / "usr/share/python-wheels"
    (pip_wheel,) = bundled.glob("pip-*.whl")
    device_pip(target, "-c", ENSUREPIP, pip_wheel, "install", "-q", "--isolated",
               "--no-index", "--find-links", bundled, "pip", "setuptools")
    device_pip(target, target.script("pip"), "install", "-q", "--isolated", "--no-index",
               "--find-links", wheels, "-c", ROOT / "constraints.txt", f"{fedge}[edge]")


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
def build(cache: Path) -> Target:
    """Builds (or reuses) everything under ``cache`` and writes ``cache/target.json``."""
    started = mark = time.monotonic()
    steps: dict[str, float] = {}
    cache.mkdir(parents=True, exist_ok=True)
    qemu, sysroot = find_qemu(cache), build_sysroot(cache)
    target = Target(qemu, sysroot, cache / "venv", {})
    facts = probe_python(target)
    log(f"device: {facts['machine']}, Python {facts['python']}, glibc {facts['libc'][1]}, "
        f"CPU {CPU} (emulated)")
    steps["sysroot_s"], mark = round(time.monotonic() - mark, 1), time.monotonic()
    tags = platforms(facts["libc"])
    fedge = build_fedge_wheel(cache / "dist")
    download_wheels(cache / "wheels", fedge, tags)
    steps["wheels_s"], mark = round(time.monotonic() - mark, 1), time.monotonic()
    install_on_device(target, cache / "wheels", fedge)
    steps["device_install_s"] = round(time.monotonic() - mark, 1)
    sizes = installed_sizes(target.site)
    log(f"installed {fedge.name}[edge] on the device with its pip, from wheels only, into "
        f"{target.venv}: site-packages {sizes['total'] / 1e6:.1f} MB "
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
    parser.add_argument("--cache", type=Path, default=ROOT / "build" / "aarch64",
                        help="where everything is built and kept (default build/aarch64)")
    args = parser.parse_args(argv)
    target = build(args.cache.resolve())
    log(f"target ready in {target.facts['steps']['build_s']} s: {args.cache / 'target.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
