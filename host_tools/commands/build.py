"""`doorctl build`: firmware images with the application frozen in."""

from __future__ import annotations

from pathlib import Path

import typer

from host_tools.errors import UserError, fail

app = typer.Typer(
    help="""Build firmware images: MicroPython v1.28.0 with the application frozen in.

The source is $MICROPY_SRC, else ../shared/vendor/micropython-1.28.0-src.tar.gz beside
the repository. Builds go to build/ and are reused while the manifest and the sources
are unchanged. Details: docs/deploy.md.
""",
    no_args_is_help=True,
)


@app.command("unix32")
def unix32(
    manifest: Path = typer.Option(None, "--manifest", help="Another manifest to freeze "
                                  "(default board/unix32/manifest.py)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the image is current."),
) -> None:
    """Build the 32-bit virtual board: the unix port with firmware, crypto, offline_cache,
    asyncio and the virtual board's modules frozen in, at build/unix32/micropython.

    Run it with: doorctl virtual run --image unix32 --state DIR
    Needs gcc with -m32 support (Debian: apt-get install gcc-multilib).

    Example: doorctl build unix32
    """
    from host_tools.image.unix32 import MANIFEST, build_unix32

    if manifest is not None and not manifest.is_file():
        raise fail(f"manifest {manifest} not found", 2)
    try:
        image = build_unix32(manifest=manifest.resolve() if manifest else MANIFEST, force=force)
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    typer.echo(str(image.binary))


@app.command("mcu")
def mcu(
    force: bool = typer.Option(False, "--force", help="Rebuild even if the image is current."),
) -> None:
    """Build the bare-metal board: MicroPython's qemu port for the MPS2-AN385 (Cortex-M3)
    with the application frozen in, at build/mcu/firmware.elf. No network in this image.

    Run a script on it with: doorctl mcu run SCRIPT
    Needs gcc-arm-none-eabi and libnewlib-arm-none-eabi (and qemu-system-arm to run it).

    Example: doorctl build mcu
    """
    from host_tools.image.mcu import build_mcu

    try:
        image = build_mcu(force=force)
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    typer.echo(str(image.elf))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="build")
