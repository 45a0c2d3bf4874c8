"""Constant-time comparison of byte strings (MAC tags, cryptograms)."""


def equal(a, b):
    """True when a == b; the time taken depends only on the lengths."""
    if len(a) != len(b):
        return False
    r = 0
    for i in range(len(a)):
        r |= a[i] ^ b[i]
    return r == 0
