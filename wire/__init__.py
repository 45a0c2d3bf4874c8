"""Protocol v1: the wire format shared by the door and the platform (docs/protocol.md)."""
