"""Remote commands from the platform, checked by the door alone (docs/protocol.md, "Commands").

A command that acts on the door (open, mode, time, config) carries an HMAC-SHA256 over its
device, id, operation, arguments and expiry with the site's `command` key. The door accepts it
only when the tag is right (constant-time compare), it is inside its validity window
(`exp - COMMAND_TTL` to `exp`, on the door's clock), it was issued after this boot (so one
captured before a reboot cannot be played again), and its id has not been seen in this boot
(single use). `patrol` needs no tag: asking for a report changes nothing.
"""

from crypto import ct
from wire import common

try:
    from micropython import const
except ImportError:  # CPython (host tools, tests/shared)

    def const(x):
        return x

_SKEW = const(2)  # s of clock difference tolerated between platform and door (synced on connect)
_MAX_SEEN = const(64)  # command ids remembered: at most this many signed commands per COMMAND_TTL



def _unhex(s):
    try:
        return bytes.fromhex(s)
    except (ValueError, TypeError):
        return None


class CommandGate:
    """Authentication, freshness and single use; `check(cmd)` -> "" or a refusal reason."""

    def __init__(self, keystore, device_id, clock, boot_ticks=None):
        self.keystore = keystore
        self.device_id = device_id
        self.clock = clock
        self._boot_ticks = clock.ticks_ms() if boot_ticks is None else boot_ticks
        self._boot_utc = None  # UTC of this boot, fixed once the clock is first known
        self._latest = None  # the latest UTC this gate has seen, and the ticks then
        self._latest_ticks = 0
        self.seen = {}  # command id -> expiry
        self.clock_set()

    def clock_set(self, trusted=False):
        """The door's clock was set (or may have been): the first time in this boot, fix the
        boot's UTC from it. Fixed then, not worked out again at each command: the ticks since
        boot wrap (after about 6 days on the ESP32), and a clock set back later must not make
        a command from before this boot look fresh. A trusted setting (signed, fresh) starts
        over from the repaired clock: what was fixed before may come from a wrong one."""
        if trusted:
            self._boot_utc = None
            self._latest = None
        if self._boot_utc is not None:
            return
        t = self.clock.time()
        if t is not None:
            up = self.clock.ticks_diff(self.clock.ticks_ms(), self._boot_ticks) // 1000
            self._boot_utc = int(t) - max(0, up)

    def _now(self):
        """The door's UTC for commands, never earlier than one this gate has already seen (plus
        the ticks since): a clock set back, by a time message or a delayed signed `time`
        command, must not reopen the window of a command already used, nor forget its id."""
        t = self.clock.time()
        if t is None:
            return None
        t = int(t)
        ticks = self.clock.ticks_ms()
        if self._latest is not None:
            # Not more than the ticks show: a wrapped tick count gives less, never more.
            floor = self._latest + max(0, self.clock.ticks_diff(ticks, self._latest_ticks) // 1000)
            if t < floor:
                t = floor
        self._latest, self._latest_ticks = t, ticks
        return t

    def check(self, cmd):
        cmd_id, op, args, exp, mac = cmd
        if op not in common.SIGNED_COMMANDS:
            return ""
        if self.keystore is None or not self.keystore.has("command"):
            return "no_keys"
        tag = _unhex(mac)
        if tag is None or len(tag) != 32:
            return "bad_mac"
        try:
            got = self.keystore.hmac_parts("command", common.command_signing_parts(
                self.device_id, cmd_id, op, args, exp))
        except common.ProtocolError:
            return "bad_field"
        if not ct.equal(got, tag):
            return "bad_mac"
        if not self.clock.trusted:
            return "clock_unset"  # set from an unsigned time: its window proves nothing
        now = self._now()
        if now is None:
            return "clock_unset"
        if now > exp + _SKEW:
            return "expired"
        issued = exp - common.COMMAND_TTL
        if now < issued - _SKEW:
            return "not_yet_valid"
        self.clock_set()
        if issued < self._boot_utc - _SKEW:
            return "stale"  # issued before this boot: the ids seen then are forgotten
        for k in list(self.seen):
            if self.seen[k] + _SKEW < now:
                del self.seen[k]
        if cmd_id in self.seen:
            return "replay"
        if len(self.seen) >= _MAX_SEEN:
            return "busy"
        self.seen[cmd_id] = exp
        return ""


def check_config(args):
    """"" when every key is known and in range, else the reason naming the first bad one."""
    if not args:
        return "bad_field:empty"
    for k in args:
        lim = common.config_limits(k)
        v = args[k]
        if lim is None:
            return "bad_field:" + k
        if isinstance(v, bool) or not isinstance(v, int) or not lim[0] <= v <= lim[1]:
            return "out_of_range:" + k
    return ""


class Commands:
    """Runs checked commands against the running firmware; replies and journals refusals."""

    def __init__(self, gate, door, recorder=None, on_time=None, config_writer=None, key_writer=None):
        self.gate = gate
        self.key_writer = key_writer  # callable(args) -> "" or why the key file was refused
        self.door = door
        self.recorder = recorder
        self.on_time = on_time
        self.config_writer = config_writer  # callable(changes) -> persist to config.json
        self.done = 0
        self.refused = 0
        # callable(reason, where): a forged command is counted (firmware/refusals.py), not
        # journaled: anyone on the broker can send them, and the ring is for events
        self.on_forged = None

    def run(self, cmd):
        """(ok, reason) for one decoded command."""
        reason = self.gate.check(cmd)
        if reason:
            return False, reason
        cmd_id, op, args, exp, mac = cmd
        if op == "time":
            t = args.get("t")
            if isinstance(t, bool) or not isinstance(t, int) or t <= 0 or self.on_time is None:
                return False, "bad_field:t"
            # The time it sets is the time it was signed for: within its own window, so a
            # signed `time` held back cannot carry the clock further than that window.
            if not exp - common.COMMAND_TTL - _SKEW <= t // 1000 <= exp + _SKEW:
                return False, "out_of_range:t"
            if self.on_time(t, True) is False:
                return False, "out_of_range:t"  # before this door's last record
            return True, ""
        if op == "config":
            bad = check_config(args)
            if bad:
                return False, bad
            if self.config_writer is not None:
                self.config_writer(args)
            self.door.configure(args)
            return True, ""
        if op == "keys":
            # a new door key file, sealed for this door (crypto/keyupdate.py)
            if self.key_writer is None:
                return False, "no_keys"
            bad = self.key_writer(args)
            return (False, bad) if bad else (True, "")
        if self.door is None:
            return False, "no_door"
        return self.door.command(op, args)

    async def handle(self, cmd, reply=None):
        ok, reason = self.run(cmd)
        if ok:
            self.done += 1
        else:
            self.refused += 1
            if reason == "bad_mac" and self.on_forged is not None:
                self.on_forged(reason, "cmd")
            elif self.recorder is not None:
                from wire.codes import COMMAND_REJECTED

                self.recorder.record(COMMAND_REJECTED, reject_code(reason),
                                     cmd[0].encode()[:12])
        if reply is not None:
            await reply(cmd[0], ok, reason)
        return ok, reason


# command_rejected event arg (docs/protocol.md): a reason's place here counted from 1, 99 for
# any other. A tuple of constants is frozen into the image; a dict would be built in the heap.
REJECT_REASONS = ("bad_mac", "expired", "not_yet_valid", "stale", "replay", "clock_unset",
                  "no_keys", "busy", "bad_field", "out_of_range", "lockdown", "bad_mode",
                  "unknown_command", "no_door", "key_generation", "key_scope")


def reject_code(reason):
    """The command_rejected event's arg for a refusal reason ("out_of_range:x" counts as
    "out_of_range")."""
    reason = reason.split(":")[0]
    return REJECT_REASONS.index(reason) + 1 if reason in REJECT_REASONS else 99
