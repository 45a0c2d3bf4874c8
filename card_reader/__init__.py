"""The card reader side, shared by the door and the host tools: the PN532 protocol and its
I/O-free Core (pn532), the door's card step (card_session) and what makes one presentation at
the reader (presentation)."""
