"""The firmware image: MicroPython 1.28 built from source with the application frozen in.

`source` finds the MicroPython tree, `steps` runs build steps with progress and a named
failing step, `cachekey` says when a built image is still current.
"""
