"""fedp2p.wire stays stdlib plus `cryptography`: no sockets, threads, asyncio, torch, numpy, pickle."""

import ast
import subprocess
import sys
from pathlib import Path

import fedp2p.wire

WIRE_DIR = Path(fedp2p.wire.__file__).parent
FORBIDDEN = {
    "socket",
    "ssl",
    "selectors",
    "threading",
    "asyncio",
    "multiprocessing",
    "concurrent",
    "torch",
    "numpy",
    "pickle",
    "marshal",
    "shelve",
}


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_wire_modules_import_nothing_forbidden() -> None:
    sources = sorted(WIRE_DIR.glob("*.py"))

    offenders = {p.name: _imported_modules(p) & FORBIDDEN for p in sources}

    assert len(sources) >= 6
    assert not any(offenders.values()), offenders


# The only third-party package the wire may use: OpenSSL's Poly1305 for the frame MAC.
ALLOWED_THIRD_PARTY = {"cryptography"}


def test_wire_modules_import_only_stdlib_fedp2p_and_cryptography() -> None:
    allowed = set(sys.stdlib_module_names) | {"fedp2p", "__future__"} | ALLOWED_THIRD_PARTY

    imported = set().union(*(_imported_modules(p) for p in WIRE_DIR.glob("*.py")))

    assert imported - allowed == set()
    assert "cryptography" in imported


def test_wire_code_never_evaluates_or_imports_dynamically() -> None:
    for path in WIRE_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Name):
                assert node.id not in {"eval", "exec", "__import__", "compile"}, path.name


def test_importing_wire_loads_no_heavy_or_network_module() -> None:
    # Not checked here: threading (stdlib logging imports it) and marshal (the import system
    # itself uses it); the AST test above covers our own code for both.
    unexpected = sorted(FORBIDDEN - {"threading", "marshal"})
    code = f"import sys, fedp2p.wire\nprint([m for m in {unexpected!r} if m in sys.modules])"

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert result.stdout.strip() == "[]"
