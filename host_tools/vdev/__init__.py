"""The virtual reference device, seen from the host: launcher, console bridge, I/O client."""
