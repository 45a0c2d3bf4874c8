"""The virtual board's support: the NOR-flash simulator (flashsim), the raw REPL on stdin
(rawrepl), the ROM-partition shim (rom), the process's boot entry (boot) and, in lib/, the
`machine` module whose reset() restarts the process. board/virtual.py is the board itself."""
