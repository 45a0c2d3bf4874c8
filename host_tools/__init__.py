"""Host tools for the door controller: the `doorctl` CLI, the virtual device, the reference platform."""

__version__ = "0.1.0"
