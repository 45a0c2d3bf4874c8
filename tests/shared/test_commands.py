# mpy-heapsize: 96K
# Remote commands checked offline by the door, on both interpreters.
from crypto.hmac256 import hmac_sha256
from crypto.keystore import SoftwareKeyStore
from wire import common
from wire.platform import command_signing_bytes
from firmware.commands import CommandGate, Commands, check_config

KEY = b"K" * 32
DEV = "site.b1.d1"
T0 = 1767225600


class Clock:
    trusted = True  # set from a time the door could verify, unless a test says not

    def __init__(self):
        self.ms = 0
        self.utc = None

    def ticks_ms(self):
        return self.ms

    def ticks_diff(self, a, b):
        return a - b

    def time(self):
        return None if self.utc is None else self.utc + self.ms // 1000


def store(key=KEY):
    return SoftwareKeyStore(1, b"DOOR", {"command": key, "card_ref": b"r" * 16})


def signed(cmd_id, op, args, exp, key=KEY, dev=DEV):
    mac = hmac_sha256(key, command_signing_bytes(dev, cmd_id, op, args, exp)).hex()
    return (cmd_id, op, args, exp, mac)


def gate_at(utc=T0, up_s=100):
    clock = Clock()
    g = CommandGate(store(), DEV, clock)
    clock.ms = up_s * 1000
    clock.utc = utc - up_s
    return g, clock


def test_signing_bytes_are_canonical_and_length_prefixed():
    b = command_signing_bytes("d", "c-1", "mode", {"mode": "lockdown", "a": 5, "z": True}, 9)
    assert b == b"door-cmd/v1|1:d3:c-14:mode9|1:a2:i54:mode9:slockdown1:z2:b1"
    # the same arguments in another order sign the same bytes
    assert b == command_signing_bytes("d", "c-1", "mode", {"z": True, "mode": "lockdown", "a": 5}, 9)


def test_a_fresh_signed_command_passes_once():
    g, _ = gate_at()
    cmd = signed("c-1", "open", {}, T0 + 60)
    assert g.check(cmd) == ""
    assert g.check(cmd) == "replay"


def test_forged_expired_early_and_foreign_commands_are_refused():
    g, _ = gate_at()
    assert g.check(signed("c-2", "open", {}, T0 + 60, key=b"X" * 32)) == "bad_mac"
    assert g.check(signed("c-3", "open", {}, T0 + 60, dev="other.door")) == "bad_mac"
    good = signed("c-4", "open", {}, T0 + 60)
    assert g.check(("c-4", "open", {"master": True}, T0 + 60, good[4])) == "bad_mac"  # args changed
    assert g.check(("c-4", "open", {}, T0 + 60, "zz")) == "bad_mac"
    assert g.check(signed("c-5", "open", {}, T0 - 10)) == "expired"
    assert g.check(signed("c-6", "open", {}, T0 + 600)) == "not_yet_valid"


def test_a_command_issued_before_this_boot_is_stale():
    g, _ = gate_at(up_s=30)  # booted 30 s ago; issued 50 s ago, still unexpired
    assert g.check(signed("c-7", "open", {}, T0 + 10)) == "stale"


def test_without_clock_or_key_signed_commands_are_refused_and_patrol_passes():
    clock = Clock()
    g = CommandGate(store(), DEV, clock)
    assert g.check(signed("c-8", "open", {}, T0 + 60)) == "clock_unset"
    assert g.check(("c-9", "patrol", {}, 0, "")) == ""
    assert CommandGate(None, DEV, clock).check(signed("c-10", "open", {}, T0 + 60)) == "no_keys"


def test_single_use_memory_is_bounded():
    g, _ = gate_at()
    for i in range(64):
        assert g.check(signed("n-%d" % i, "open", {}, T0 + 60)) == ""
    assert g.check(signed("n-64", "open", {}, T0 + 60)) == "busy"


def test_config_values_are_checked_by_name_and_range():
    assert check_config({"unlock_ms": 3000, "patrol_interval_s": 60}) == ""
    assert check_config({"unlock_ms": 10}) == "out_of_range:unlock_ms"
    assert check_config({"unlock_ms": "3000"}) == "out_of_range:unlock_ms"
    assert check_config({"wifi_password": 1}) == "bad_field:wifi_password"
    assert check_config({}) == "bad_field:empty"


class Door:
    def __init__(self):
        self.calls = []

    def command(self, op, args):
        self.calls.append((op, args))
        return True, ""

    def configure(self, changes):
        self.calls.append(("configure", changes))


def test_commands_reach_the_door_only_when_checked():
    g, _ = gate_at()
    door = Door()
    written = []
    c = Commands(g, door, config_writer=written.append)
    assert c.run(signed("a", "mode", {"mode": "lockdown"}, T0 + 60)) == (True, "")
    assert c.run(signed("a", "mode", {"mode": "lockdown"}, T0 + 60)) == (False, "replay")
    assert c.run(signed("b", "config", {"unlock_ms": 9}, T0 + 60)) == (False, "out_of_range:unlock_ms")
    assert c.run(signed("c", "config", {"unlock_ms": 2500}, T0 + 60)) == (True, "")
    assert door.calls == [("mode", {"mode": "lockdown"}), ("configure", {"unlock_ms": 2500})]
    assert written == [{"unlock_ms": 2500}]


def test_a_clock_set_back_does_not_reopen_a_used_command():
    # The time message carries no tag: a clock moved back must not make a used command's
    # window open again, nor let its id be forgotten early.
    g, clock = gate_at()
    cmd = signed("r-1", "open", {}, T0 + 60)
    assert g.check(cmd) == ""
    clock.ms += 90 * 1000  # past its window: its id may be forgotten
    assert g.check(signed("r-2", "open", {}, T0 + 150)) == ""
    clock.utc -= 90  # someone sets the clock back into r-1's window
    assert g.check(cmd) in ("expired", "replay")


def test_a_command_from_before_a_reboot_stays_stale_when_the_clock_is_set_back():
    clock = Clock()
    clock.ms = 5000
    clock.utc = T0 - 5  # the clock is set 5 s after boot, right
    g = CommandGate(store(), DEV, clock, boot_ticks=0)
    old = signed("b-1", "open", {}, T0 - 20 + 60)  # issued 20 s before this boot
    clock.utc -= 18  # then set back 18 s: the command would look issued after this boot
    assert g.check(old) == "stale"


def test_stale_does_not_come_from_ticks_that_wrapped():
    # On the ESP32 the ticks wrap after 2**30 ms (about 12 days) and differences are only
    # good for half of that: 7 days after boot a fresh command is still fresh.
    period = 1 << 30

    class WrapClock(Clock):
        def ticks_ms(self):
            return self.ms % period

        def ticks_diff(self, a, b):
            return ((a - b + period // 2) % period) - period // 2

    clock = WrapClock()
    g = CommandGate(store(), DEV, clock, boot_ticks=0)
    clock.ms = 10 * 1000
    clock.utc = T0 - 10
    g.clock_set()  # the clock is set 10 s after boot
    clock.ms = 7 * 86400 * 1000
    now = clock.time()
    assert g.check(signed("w-1", "open", {}, now + 60)) == ""


def test_a_signed_time_sets_a_time_inside_its_own_window_only():
    g, _ = gate_at()
    got = []
    c = Commands(g, Door(), on_time=lambda t, signed: got.append((t, signed)))
    assert c.run(signed("t-1", "time", {"t": (T0 - 3600) * 1000}, T0 + 60)) == (False, "out_of_range:t")
    assert c.run(signed("t-2", "time", {"t": T0 * 1000}, T0 + 60)) == (True, "")
    assert got == [(T0 * 1000, True)]


def test_an_untrusted_clock_refuses_signed_commands_until_a_trusted_time_repairs_it():
    g, clock = gate_at(T0 + 400 * 86400)  # wrong by 400 days (a signed `time` went wrong)
    g.clock_set()
    assert g.check(signed("u-0", "open", {}, T0 + 400 * 86400 + 60)) == ""
    clock.trusted = False  # set by an unsigned time: nothing about its window can be checked
    assert g.check(signed("u-1", "open", {}, T0 + 400 * 86400 + 60)) == "clock_unset"
    clock.utc = T0 - 100  # a signed, fresh time puts it back 400 days
    clock.trusted = True
    g.clock_set(True)
    assert g.check(signed("u-2", "open", {}, T0 + 60)) == ""  # neither stale nor not yet valid


def test_the_signing_parts_join_to_the_signing_bytes_and_mac_alike():
    from crypto.keystore import SoftwareKeyStore

    args = {"keyfile": "ab" * 700, "n": 3, "on": True}
    parts = list(common.command_signing_parts("d.1", "c1", "keys", args, 1767225600))
    assert b"".join(parts) == command_signing_bytes("d.1", "c1", "keys", args, 1767225600)
    assert max(len(p) for p in parts) <= 1400  # the long value alone, never a copy of it all
    ks = SoftwareKeyStore(1, 1, {"command": bytes(range(32))})
    assert ks.hmac_parts("command", parts) == ks.hmac("command", b"".join(parts))
