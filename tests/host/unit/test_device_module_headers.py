"""One header style in the device code: each module says why it exists in a docstring (the
MicroPython compiler drops it, so it costs the image and the heap nothing), not in a comment
block that tools such as `help()` and pydoc cannot see."""

from __future__ import annotations

import ast

from host_tools.paths import DEVICE_PACKAGES, REPO_ROOT


def _device_modules() -> list[str]:
    found = []
    for pkg in DEVICE_PACKAGES:
        for path in sorted((REPO_ROOT / pkg).rglob("*.py")):
            if path.name == "manifest.py":  # MicroPython's build script, not a module
                continue
            found.append(str(path.relative_to(REPO_ROOT)))
    return found


def test_every_device_module_opens_with_a_docstring() -> None:
    modules = _device_modules()
    assert len(modules) > 40
    missing = []
    for rel in modules:
        text = (REPO_ROOT / rel).read_text()
        if not text.strip():
            continue  # an empty package marker
        if ast.get_docstring(ast.parse(text, rel)) is None:
            missing.append(rel)
    assert missing == [], f"device modules without a docstring header: {missing}"
