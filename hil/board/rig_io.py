# Firmware of the bench rig's I/O board (a Raspberry Pi Pico with MicroPython, docs/hil.md):
# drives the door's inputs and watches its outputs, talking to the HIL host over USB serial.
#
# host -> board, one command per line:
#   set rex 0|1            REX button (relay across the DUT's REX input)
#   set tamper 0|1         tamper switch
#   set fire 0|1           fire loop
#   set contact closed|open|short|cut   door contact loop (relays switch the EOL resistors)
#   power 0|1              DUT power relay
#   get                    prints "state ..." with every input and output
# board -> host:
#   ok <us> | err <why>    the answer to each command; set and power: ticks_us when applied
#   state ...              the answer to get (inputs; outputs as out_<name>=0|1)
#   out <name> <0|1> <us>  a DUT output changed (relay, buzzer, led_green, led_red), board ticks_us
import sys

# Pico GPIO numbers (docs/hil.md, bench wiring).
DRIVE = {"rex": 2, "tamper": 3, "fire": 4, "power": 5}
CONTACT = {"loop_open": 6, "loop_short": 7}  # two relays shape the loop: closed / open / short / cut
WATCH = {"relay": 10, "buzzer": 11, "led_green": 12, "led_red": 13}
CONTACT_RELAYS = {"closed": (0, 0), "open": (1, 0), "short": (0, 1), "cut": (1, 1)}


def handle(line, pins, state):
    """One command line; returns the answer line. `pins[name].value(v)` drives an output."""
    parts = line.split()
    if not parts:
        return "err empty"
    cmd = parts[0]
    if cmd == "get" and len(parts) == 1:
        return "state " + " ".join("%s=%s" % (k, state[k]) for k in sorted(state))
    if cmd == "power" and len(parts) == 2 and parts[1] in ("0", "1"):
        pins["power"].value(int(parts[1]))
        state["power"] = parts[1]
        return "ok"
    if cmd == "set" and len(parts) == 3:
        name, value = parts[1], parts[2]
        if name == "contact":
            if value not in CONTACT_RELAYS:
                return "err contact must be closed, open, short or cut"
            a, b = CONTACT_RELAYS[value]
            pins["loop_open"].value(a)
            pins["loop_short"].value(b)
            state["contact"] = value
            return "ok"
        if name in ("rex", "tamper", "fire") and value in ("0", "1"):
            pins[name].value(int(value))
            state[name] = value
            return "ok"
        return "err bad value for " + name
    return "err unknown command"


def answer(line, pins, state, now_us):
    """`handle`, with the board's clock on an acknowledged change: `ok <ticks_us>`."""
    a = handle(line, pins, state)
    return "ok %d" % now_us() if a == "ok" else a


def main():  # pragma: no cover - runs on the board
    import select
    import time

    from machine import Pin

    pins = {}
    for name, gp in list(DRIVE.items()) + list(CONTACT.items()):
        pins[name] = Pin(gp, Pin.OUT, value=0)
    watch = {name: Pin(gp, Pin.IN, Pin.PULL_DOWN) for name, gp in WATCH.items()}
    last = {name: p.value() for name, p in watch.items()}
    state = {"rex": "0", "tamper": "0", "fire": "0", "power": "0", "contact": "closed"}
    poll = select.poll()
    poll.register(sys.stdin, select.POLLIN)
    buf = ""
    for name, v in last.items():
        state["out_" + name] = str(v)
    while True:
        for name, p in watch.items():
            v = p.value()
            if v != last[name]:
                last[name] = v
                state["out_" + name] = str(v)
                print("out %s %d %d" % (name, v, time.ticks_us()))
        if poll.poll(0):
            c = sys.stdin.read(1)
            if c == "\n":
                print(answer(buf.strip(), pins, state, time.ticks_us))
                buf = ""
            else:
                buf += c


if __name__ == "__main__":  # pragma: no cover
    main()
