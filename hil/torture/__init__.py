"""The torture run: a seeded random schedule of faults (power cuts, broker stops and kills, TCP
drops, platform kills, long outages that overflow a journal, a hostile publisher on every door
topic) over real doors, mosquitto and the platform, and one invariant checker at the end
(docs/torture.md). `plan` makes the schedule, `hostile` the attacker's messages, `check` the
verdict, `rig` runs it all."""
