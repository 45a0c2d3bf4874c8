"""Parts of a commissioned door that disagree (docs/door.md, "Patrol", `setup`).

Keys of another site or door than the configuration, no key file, a whitelist the door
refuses (another site's, damaged): such a door refuses every card while its door and reader
look normal, so each is an alarm at the platform. Found once at boot; `with_clock` adds the
clock's state, which changes while the door runs.
"""


def problems(cfg, keystore, cache):
    """The disagreeing parts, as reasons; [] for a door not commissioned (nothing to
    disagree with)."""
    if "site_id" not in cfg:
        return []
    out = []
    if keystore is None:
        out.append("no_keys")
    elif keystore.site_id != cfg["site_id"]:
        out.append("keys_site")
    elif keystore.scope == "door" and keystore.device != cfg.get("device_id"):
        out.append("keys_door")  # another door's key file: it verifies nothing signed for this one
    if cache is not None and cache.error and cache.error != "no_cache":
        out.append("whitelist_refused")
    return out


def fault_bits(found):
    """The `setup_fault` record's arg: a bit per part, by its place in wire.codes.SETUP_PARTS."""
    from wire.codes import SETUP_PARTS

    bits = 0
    for p in found:
        bits |= 1 << SETUP_PARTS.index(p)
    return bits


def with_clock(found, clock):
    """The boot's problems plus `clock_unset` until the door holds a time it could verify
    (the platform's signed time). Until then it runs its offline policy (cards refused with
    `clock_unset`), so the platform lists it as an alarm."""
    from firmware.clock_trust import is_trusted

    out = list(found or ())
    if not is_trusted(clock):
        out.append("clock_unset")
    return out
