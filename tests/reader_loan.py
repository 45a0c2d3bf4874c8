"""A console program's first lines inside `async def go()` on a running virtual door: borrow the
reader from the firmware's card task, and go on once the task has ended its poll in flight and
let go (its status says "held"), not after a fixed time a late poll can outlast."""

BORROW_READER = """\
    running["cards"].hold = True
    for _ in range(500):
        if running["cards"].status.get("reader") == "held":
            break
        await asyncio.sleep_ms(10)
    else:
        raise AssertionError("the card task never let go: %r" % running["cards"].status.get("reader"))
"""
