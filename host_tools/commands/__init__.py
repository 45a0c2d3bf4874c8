"""Command groups of `doorctl`; each module defines `register(app)`."""
