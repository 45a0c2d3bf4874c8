"""Instruction counts on the bare-metal board (`doorctl build mcu`, docs/mcu.md).

Each figure is counted by the guest itself (`mps2.insn()`, QEMU `-icount shift=6`) in a run
from reset with no input, so it is the same on every run and every machine: the baseline is
the figure's own row in BENCHMARKS.md, and `doorctl mcu check-bench` fails when a count grows
more than 5 % over it (the table updated in the same change moves the baseline with it).
`mcu.section.*` figures split an operation into the parts a profile needs ("of which").
The estimate in milliseconds assumes one instruction per cycle on a 240 MHz core.
"""

from __future__ import annotations

from pathlib import Path

from host_tools.benchmarks import Outcome, failing
from host_tools.paths import REPO_ROOT

SCRIPT = Path(__file__).with_name("device") / "mcu_bench.py"
CARDS = 100_000
SMOKE = {"CARDS": 300}
HEAP = 65536  # the door's heap
EV2_HEAP = 131072  # the door's 64 KiB plus the simulated card, compiled from source in the guest
CLOCK_HZ = 240_000_000
GROWTH_LIMIT = 0.05
# Issue 15's goals: a count over its goal fails the check whatever the table says (a table
# updated in the same change may allow 5 % growth, never past these).
GOALS = {"mcu.insn_decision_100k": 50_000, "mcu.insn_ev2_session": 1_000_000}
# Host modules the guest needs (put on its filesystem): the whitelist builder for the snapshot
# it installs before measuring, and the simulated card.
BUILDER_FILES = ("host_tools/__init__.py", "host_tools/cache_build.py")
CARD_FILES = (*BUILDER_FILES, "host_tools/cards/__init__.py", "host_tools/cards/desfire.py")
MODE_FILES = {"decision": BUILDER_FILES, "ev2": CARD_FILES}

FIGURES = {
    "mcu.insn_decision_100k": "one granted decision against a 100,000-card whitelist on littlefs "
                              "(flash block device), Cortex-M3, instructions",
    "mcu.decision_100k_ms_240mhz": "estimate: mcu.insn_decision_100k at one instruction per "
                                   "cycle on a 240 MHz core, ms",
    "mcu.insn_decision_unknown_100k": "one decision for an unknown card, 100,000-card whitelist, "
                                      "instructions",
    "mcu.insn_cmac64": "AES-CMAC over 64 bytes (crypto/cmac.py over cryptolib), instructions",
    "mcu.insn_ev2_session": "device side of a whole EV2 card step (select, AuthenticateEV2First, "
                            "GetCardUID, MAC'd read of the credential file, reference) and the "
                            "decision at 100,000 cards; the simulated card's work left out, "
                            "instructions",
    "mcu.insn_door_event": "a granted card at the door machine, its event recorded in the "
                           "journal on flash, instructions",
    "mcu.flash_text_bytes": "the image's text (code + frozen application + read-only data), "
                            "bytes",
    "mcu.section.decision.lookup": "of mcu.insn_decision_100k: the whitelist lookup, "
                                   "instructions",
    "mcu.section.decision.flash_read": "of the lookup: reads through littlefs, instructions",
    "mcu.section.decision_unknown.lookup": "of mcu.insn_decision_unknown_100k: the lookup, "
                                           "instructions",
    "mcu.section.ev2_session.card_step": "of mcu.insn_ev2_session: the card step, instructions",
    "mcu.section.ev2_session.decision": "of mcu.insn_ev2_session: the decision, instructions",
    "mcu.section.ev2_session.key_diversification": "of the card step: the card key's "
                                                   "diversification, instructions",
    "mcu.section.ev2_session.cmac": "of the card step: CMACs (secure messaging, key "
                                    "diversification), instructions",
    "mcu.section.ev2_session.aes_encrypt_block": "of the card step: AES block encryptions, "
                                                 "instructions",
    "mcu.section.ev2_session.aes_cbc": "of the card step: AES-CBC calls (secure messaging, "
                                       "authentication, CMAC chains), instructions",
    "mcu.section.door_event.journal_append": "of mcu.insn_door_event: the journal append, "
                                             "instructions",
}
# Figures from the guest under another name here (the guest names the card count apart).
RENAME = {"mcu.insn_decision": "mcu.insn_decision_100k",
          "mcu.insn_decision_unknown": "mcu.insn_decision_unknown_100k"}


def parse(output: str) -> dict[str, float]:
    """`fig NAME VALUE` lines of the guest script."""
    found: dict[str, float] = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "fig":
            found[RENAME.get(parts[1], parts[1])] = float(parts[2])
    return found


def measure(mode: str, *args: str, heap: int = HEAP,
            files: tuple[str, ...] | None = None) -> dict[str, float]:
    """Run one mode of the guest script on the mcu image (with the host modules that mode needs
    unless `files` says otherwise); its figures."""
    if files is None:
        files = MODE_FILES.get(mode, ())
    from host_tools.image.mcu import build_mcu
    from host_tools.image.qemu import run_source
    from host_tools.image.steps import Steps

    elf = build_mcu(Steps(quiet=True)).elf
    run = run_source(elf, SCRIPT.read_bytes(), [mode, *args], heap, timeout=900,
                     files={"/" + f: (REPO_ROOT / f).read_bytes() for f in files},
                     name=SCRIPT.name)
    if run.status != 0:
        tail = " ".join(run.output.strip().splitlines()[-2:])
        raise RuntimeError(f"mcu_bench.py {mode} exit {run.status}: {tail}")
    return parse(run.output)


def run(names: set[str]) -> dict[str, Outcome]:
    out: dict[str, Outcome] = {}

    def wanted(*prefixes: str) -> bool:
        return any(n.startswith(p) for n in names for p in prefixes)

    if wanted("mcu.insn_decision", "mcu.decision", "mcu.section.decision"):
        group = [f for f in FIGURES if "decision" in f and "ev2" not in f]
        with failing(out, *group):
            got = measure("decision", str(CARDS))
            got["mcu.decision_100k_ms_240mhz"] = got["mcu.insn_decision_100k"] / CLOCK_HZ * 1000
            out.update({k: v for k, v in got.items() if k in FIGURES})
    if wanted("mcu.insn_cmac64"):
        with failing(out, "mcu.insn_cmac64"):
            out.update(measure("cmac"))
    if wanted("mcu.insn_ev2", "mcu.section.ev2"):
        with failing(out, *[f for f in FIGURES if "ev2" in f]):
            got = measure("ev2", str(CARDS), heap=EV2_HEAP)
            out.update({k: v for k, v in got.items() if k in FIGURES})
    if wanted("mcu.insn_door_event", "mcu.section.door_event"):
        with failing(out, "mcu.insn_door_event", "mcu.section.door_event.journal_append"):
            out.update(measure("door_event"))
    if "mcu.flash_text_bytes" in names:
        with failing(out, "mcu.flash_text_bytes"):
            from host_tools.image.mcu import build_mcu
            from host_tools.image.steps import Steps

            out["mcu.flash_text_bytes"] = float(build_mcu(Steps(quiet=True)).sections["text"])
    return out


def check_growth(measured: dict[str, float], table: dict[str, str],
                 limit: float = GROWTH_LIMIT) -> tuple[list[str], list[str]]:
    """(failures, notes): a count more than `limit` over its BENCHMARKS.md row fails, naming
    the figure, and so does a count over its goal (GOALS); a figure the table does not have
    yet is only noted. Estimates (ms) are left to their instruction count."""
    failures, notes = [], []
    for name in sorted(measured):
        if not name.startswith("mcu.") or name.endswith("_ms_240mhz"):
            continue
        value = measured[name]
        goal = GOALS.get(name)
        if goal is not None and value > goal:
            failures.append(f"{name} is {value:,.0f}, over its goal of {goal:,} (issue 15)")
            continue
        if name not in table:
            notes.append(f"{name}: {value:,.0f} (not in the table yet)")
            continue
        try:
            base = float(table[name].replace(",", ""))
        except ValueError:
            notes.append(f"{name}: {value:,.0f} (the table says {table[name]!r})")
            continue
        if base > 0 and value > base * (1 + limit):
            failures.append(f"{name} grew {100 * (value / base - 1):.1f} %: {value:,.0f} against "
                            f"{base:,.0f} in the table (update BENCHMARKS.md in the same change "
                            "if that is intended)")
        else:
            notes.append(f"{name}: {value:,.0f} (table {base:,.0f})")
    return failures, notes
