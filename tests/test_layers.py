"""The layers of docs/architecture.md, enforced: each package of ``gateway`` imports only
the packages below it (and the shared ``gateway.log``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"
# Bottom to top; a layer may import itself and every layer before it.
LAYERS = ("sip", "registry", "overlay", "server", "app")
SHARED = {"gateway", "gateway.log"}


def imported_modules(path: Path) -> set[str]:
    """Every ``gateway...`` module ``path`` imports (at any depth, lazily or not)."""
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name for name in names if name == "gateway" or name.startswith("gateway.")}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def violations(root: Path = PACKAGE) -> list[str]:
    """``file imports module`` for every import against the layer order."""
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if len(relative.parts) < 2 or relative.parts[0] not in LAYERS:
            assert str(relative) in ("__init__.py", "log.py"), \
                f"gateway/{relative} lies outside every layer"
            continue
        allowed = LAYERS[:LAYERS.index(relative.parts[0]) + 1]
        for module in imported_modules(path):
            if module in SHARED:
                continue
            layer = layer_of(module)
            if layer is None or layer not in allowed:
                found.append(f"gateway/{relative} imports {module}")
    return found


def test_every_module_imports_only_layers_below_it() -> None:
    assert violations() == []


def test_the_sip_stack_imports_nothing_of_the_application() -> None:
    stack = [m for p in (PACKAGE / "sip").rglob("*.py") for m in imported_modules(p)]
    assert stack and all(m.startswith("gateway.sip") or m in SHARED for m in stack)


def test_a_stack_module_importing_the_config_is_reported(tmp_path: Path) -> None:
    (tmp_path / "sip").mkdir()
    (tmp_path / "sip" / "tls.py").write_text("from gateway.app.config import TlsSection\n")
    (tmp_path / "server").mkdir()
    (tmp_path / "server" / "core.py").write_text("import gateway.sip.parser\n"
                                                 "from gateway.registry import binding\n")
    assert violations(tmp_path) == ["gateway/sip/tls.py imports gateway.app.config"]


@pytest.mark.parametrize("name", ["core.py", "config.py"])
def test_a_module_outside_the_layers_is_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("")
    with pytest.raises(AssertionError, match="outside every layer"):
        violations(tmp_path)
