"""A Debian arm64 userland for an emulated device: Debian's own packages, a private apt, qemu.

Nothing here touches the host's dpkg or needs root: apt-get resolves and downloads into a
private state under the cache, dpkg-deb unpacks (no maintainer scripts run; none are needed to
run python), and qemu-aarch64-static comes from Debian's qemu-user-static unless the host has
one. Used by :mod:`aarch64.target`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
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


def tree_bytes(path: Path) -> int:
    """Apparent size of every regular file under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())



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
