"""What the doorctl distribution holds, as setuptools finds it from pyproject.toml: the device
packages, the host tools and the HIL rig, but no tests (the rig's own tests in hil/tests stay
in the repository)."""

from __future__ import annotations

import tomllib

from setuptools import find_packages

from host_tools.paths import REPO_ROOT


def packaged() -> list[str]:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    found = config["tool"]["setuptools"]["packages"]["find"]
    return find_packages(str(REPO_ROOT), include=found["include"], exclude=found.get("exclude", ()))


def test_the_rig_is_packaged_without_its_own_tests() -> None:
    packages = packaged()
    assert {"hil", "hil.board", "hil.drivers", "host_tools.torture", "host_tools",
            "firmware"} <= set(packages)
    assert (REPO_ROOT / "hil" / "tests" / "__init__.py").exists()
    assert [p for p in packages if p == "tests" or p.startswith("tests.") or ".tests" in p] == []


def test_no_package_of_ours_takes_the_name_of_an_installed_one() -> None:
    """A root package named like another distribution's (nfcpy's `nfc`, say) shadows it for
    every tool and test that imports it, silently."""
    import importlib.metadata

    owners = importlib.metadata.packages_distributions()
    roots = sorted({p.split(".")[0] for p in packaged()})
    assert "card_reader" in roots
    clashes = {r: owners[r] for r in roots if set(owners.get(r, ())) - {"doorctl"}}
    assert clashes == {}
