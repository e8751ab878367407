"""The dependency rules of the house style (../shared/STYLE.md), checked on the source."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from import_block import BLOCK_TENSORFLOW

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge_client", "aggregator", "models", "tools")
ALLOWED: dict[str, set[str]] = {
    "edge_client": set(),
    "models": set(),
    "aggregator": {"edge_client"},
    "tools": {"edge_client", "aggregator", "models"},
}
# aggregator may use only these edge_client modules (../shared/STYLE.md): the wire modules,
# and the code both sides share (settings: the config reader; files: the atomic write)
AGGREGATOR_MAY_USE = {"edge_client", "edge_client.protocol", "edge_client.quantize",
                      "edge_client.transport", "edge_client.transfer", "edge_client.errors",
                      "edge_client.model", "edge_client.probe", "edge_client.signing",
                      "edge_client.settings", "edge_client.files", "edge_client.score_counts",
                      "edge_client.scoring",
                      # the statistics phase adds the devices' reports as fedge stats does
                      "edge_client.feature_stats", "edge_client.schema"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def _repo_imports(pkg: str) -> list[tuple[Path, str]]:
    found = []
    for path in sorted((ROOT / pkg).rglob("*.py")):
        for name in _imports(path):
            if name.split(".")[0] in PACKAGES:
                found.append((path, name))
    return found


@pytest.mark.parametrize("pkg", PACKAGES)
def test_imports_point_one_way(pkg: str) -> None:
    bad = [
        f"{p.relative_to(ROOT)} imports {n}"
        for p, n in _repo_imports(pkg)
        if n.split(".")[0] != pkg and n.split(".")[0] not in ALLOWED[pkg]
    ]
    assert not bad, "dependency direction broken:\n" + "\n".join(bad)


def test_aggregator_uses_only_wire_modules_of_edge_client() -> None:
    bad = [
        f"{p.relative_to(ROOT)} imports {n}"
        for p, n in _repo_imports("aggregator")
        if n.startswith("edge_client") and n not in AGGREGATOR_MAY_USE
    ]
    assert not bad, "\n".join(bad)


def test_only_transport_imports_paho_and_only_runtime_imports_tflite() -> None:
    owners = {"paho": "transport.py", "tflite_runtime": "runtime.py",
              "ai_edge_litert": "runtime.py"}
    bad = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for name in _imports(path):
                owner = owners.get(name.split(".")[0])
                if owner and not (pkg == "edge_client" and path.name == owner):
                    bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_no_pickle_anywhere() -> None:
    bad = [
        f"{p.relative_to(ROOT)}"
        for pkg in PACKAGES
        for p in (ROOT / pkg).rglob("*.py")
        if any(n.split(".")[0] in ("pickle", "cloudpickle", "dill") for n in _imports(p))
    ]
    assert not bad, bad


def test_edge_client_and_aggregator_import_without_tensorflow() -> None:
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for pkg in ("edge_client", "aggregator")
        for p in (ROOT / pkg).rglob("*.py")
        if p.name != "__main__.py"
    )
    code = BLOCK_TENSORFLOW + "".join(f"import {m}\n" for m in modules) + (
        "assert 'tensorflow' not in sys.modules\nprint('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]


def test_no_utils_module_and_no_two_names_that_differ_by_an_underscore() -> None:
    bad = []
    for pkg in PACKAGES:
        for folder in sorted({p.parent for p in (ROOT / pkg).rglob("*.py")}):
            names = sorted({p.stem for p in folder.glob("*.py")}
                           | {p.name for p in folder.iterdir() if (p / "__init__.py").exists()})
            bad += [f"{folder.relative_to(ROOT)}/{n}" for n in names
                    if n in ("utils", "util", "helpers", "misc")]
            squashed: dict[str, str] = {}
            for name in names:
                other = squashed.setdefault(name.replace("_", ""), name)
                if other != name:
                    bad.append(f"{folder.relative_to(ROOT)}: {other} and {name}")
    assert not bad, bad


def test_every_tools_package_states_its_public_names() -> None:
    bad = []
    for init in sorted((ROOT / "tools").rglob("__init__.py")):
        package = importlib.import_module(".".join(init.parent.relative_to(ROOT).parts))
        names = getattr(package, "__all__", None)
        if not isinstance(names, list) or not names:
            bad.append(f"{init.relative_to(ROOT)}: no __all__")
            continue
        bad += [f"{init.relative_to(ROOT)}: {n} in __all__ is not defined"
                for n in names if not hasattr(package, n)]
    assert not bad, bad


@pytest.mark.parametrize("package", ["edge_client", "edge_client.protocol", "models",
                                     "aggregator"])
def test_every_package_states_its_public_names(package: str) -> None:
    """``__all__`` names only what exists; a package re-exporting nothing lists its modules."""
    directory = ROOT.joinpath(*package.split("."))
    tree = ast.parse((directory / "__init__.py").read_text())
    listed = [ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
              and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)]
    assert listed, f"{package}/__init__.py has no __all__"
    modules = {p.stem for p in directory.glob("*.py") if not p.name.startswith("_")}
    modules |= {p.parent.name for p in directory.glob("*/__init__.py")}
    imported = {a.asname or a.name for node in tree.body if isinstance(node, ast.ImportFrom)
                and node.module != "__future__" for a in node.names}
    assert not set(listed[0]) - modules - imported, "__all__ names what does not exist"
    if not imported:
        assert sorted(listed[0]) == sorted(modules)
