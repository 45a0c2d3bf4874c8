"""main.py of the door firmware image (frozen in, so it runs at boot before any file of that
name): the board's start-up, the same code `doorctl deploy` writes as main.py."""
import board.esp32_main  # noqa: F401
