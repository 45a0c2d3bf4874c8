"""The platform's card registry as the commands open it: the site key file's cache key, the
platform's database (shared by `platform run --keys` and the card commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from host_tools.cli_inputs import open_store
from host_tools.errors import EXIT_USAGE, UserError


def open_registry(db: str, keys: Path) -> Any:
    from host_tools.cards import sitekeys
    from reference_platform.cards import CardRegistry

    site, _ = sitekeys.load(keys, for_doors=True)
    if "cache" not in site["keys"]:
        raise UserError(f"{keys} has no cache key: make a site key file with doorctl card keys init",
                        EXIT_USAGE)
    return CardRegistry(open_store(db), site)
