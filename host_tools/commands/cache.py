"""`doorctl cache`: build, diff and inspect signed whitelist cache files (docs/cache-format.md).

Cards CSV (a header row with these names, lower case, in any order; only `ref` is required;
UTF-8, a spreadsheet's byte-order mark, CRLF and `;` separators are read as meant):

    ref,status,valid_from,valid_to,doors,schedule,class
    0011223344556677,active,2026-01-01,2026-12-31,0 1 2,0,normal

- ref: card reference, 16 hex digits (`doorctl card personalize` prints it)
- status: active | lost | suspended | cancelled
- valid_from / valid_to: YYYY-MM-DD, site local days, both included; empty valid_to: no end
- doors: door numbers 0..15 separated by spaces, or `*` for every door
- schedule: time schedule id 1..30, or 0 / empty for any time
- class: normal | master (master staff cards still open in lockdown)

An unknown column, a bad row (named by its line, a duplicate ref too), valid_to before
valid_from, an empty file or a --site other than the key file's is refused: nothing is written.

Schedules file (JSON, optional):
`{"schedules": {"1": [{"days": "mon tue wed thu fri", "from": "07:00", "to": "22:00"}]},
  "holidays": ["2026-10-01"]}`; day names mon..sun and `hol` (applies on holidays only).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import Progress

from host_tools import cache_build
from host_tools.errors import EXIT_FAILED, EXIT_USAGE, UserError, fail
from offline_cache import fmt
from wire.common import SITE_TZ_MIN

cache_app = typer.Typer(help="Build, diff and inspect signed whitelist cache files.\n\n"
                        + (__doc__ or "").split("\n", 1)[-1].strip(),
                        short_help="Build, diff and inspect signed whitelist cache files.",
                        no_args_is_help=True, rich_markup_mode=None)

KEY_OPT = typer.Option(..., "--key", "-k", help="Cache signing key: the site key file "
                       "(doorctl card keys init) or a file of hex, at least 16 bytes.")
EPOCH = dt.date(1970, 1, 1)
DAY_BITS = {"mon": 1, "tue": 2, "wed": 4, "thu": 8, "fri": 16, "sat": 32, "sun": 64, "hol": 128}
STATUS = {name: i for i, name in enumerate(fmt.STATUS_NAMES)}


def load_key(path: Path) -> bytes:
    """The cache signing key: a file of hex, or a site key file (its `cache` key)."""
    return load_key_and_site(path)[0]


def load_key_and_site(path: Path) -> tuple[bytes, int | None]:
    """The cache signing key and, for a site key file, its site id (None for a hex file)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise UserError(f"key file {path} is not text: give the site key file from "
                        "`doorctl card keys init` or a file of hex", EXIT_USAGE) from None
    except OSError:
        raise UserError(f"key file {path} cannot be read", EXIT_USAGE) from None
    site: int | None = None
    if text.startswith("{"):
        try:
            doc = json.loads(text)
            text = doc["keys"]["cache"]
            site = int(doc["site_id"]) if "site_id" in doc else None
        except (ValueError, KeyError, TypeError):
            raise UserError(f"key file {path} is JSON without a cache key: use a site key file "
                            "from `doorctl card keys init`", EXIT_USAGE) from None
    try:
        key = bytes.fromhex(text)
    except (ValueError, TypeError):
        raise UserError(f"key file {path} is not hex", EXIT_USAGE) from None
    if len(key) < 16:
        raise UserError(f"key file {path}: the key must be at least 16 bytes", EXIT_USAGE)
    return key, site


def _day(text: str, what: str) -> int:
    try:
        return (dt.date.fromisoformat(text.strip()) - EPOCH).days
    except ValueError:
        raise UserError(f"{what}: {text!r} is not a date YYYY-MM-DD", EXIT_USAGE) from None


def _minute(text: str) -> int:
    h, _, m = text.partition(":")
    return int(h) * 60 + int(m or 0)


def parse_card(row: dict[str, str], line: int) -> bytes:
    where = f"cards line {line}"
    try:
        ref = bytes.fromhex((row.get("ref") or "").strip())
    except ValueError:
        ref = b""
    if len(ref) != fmt.REF_LEN:
        raise UserError(f"{where}: ref must be 16 hex digits", EXIT_USAGE)
    status = STATUS.get((row.get("status") or "active").strip().lower())
    if status is None:
        raise UserError(f"{where}: status must be one of {', '.join(fmt.STATUS_NAMES)}", EXIT_USAGE)
    start = _day(row.get("valid_from") or "1970-01-01", where)
    end = _day(row["valid_to"], where) if (row.get("valid_to") or "").strip() else fmt.NO_END
    if not 0 <= start < fmt.NO_END or not 0 <= end <= fmt.NO_END:
        raise UserError(f"{where}: dates must fall between 1970 and 2149", EXIT_USAGE)
    if end < start:
        raise UserError(f"{where}: valid_to {row['valid_to'].strip()} is before valid_from "
                        f"{(row.get('valid_from') or '').strip()}", EXIT_USAGE)
    doors_txt = (row.get("doors") or "").strip()
    groups = 0
    try:
        if doors_txt == "*":
            groups = 0xFFFF
        else:
            for d in doors_txt.replace(";", " ").split():
                if not 0 <= int(d) <= 15:
                    raise ValueError
                groups |= 1 << int(d)
        sched = int((row.get("schedule") or "0").strip())
    except ValueError:
        raise UserError(f"{where}: doors must be numbers 0..15 or *, schedule a number", EXIT_USAGE) from None
    if not 0 <= sched <= fmt.MAX_SCHEDULE:
        raise UserError(f"{where}: schedule must be 0..{fmt.MAX_SCHEDULE}", EXIT_USAGE)
    klass = (row.get("class") or "normal").strip().lower()
    if klass not in ("normal", "master"):
        raise UserError(f"{where}: class must be normal or master", EXIT_USAGE)
    return cache_build.pack_record(ref, status, klass == "master", sched, start, end, groups)


COLUMNS = ("ref", "status", "valid_from", "valid_to", "doors", "schedule", "class")
MAX_LISTED = 5  # row errors named in the one line; the rest are counted


def _rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and (line number, fields) of each non-blank row. A spreadsheet's byte-order
    mark and CRLF line ends are taken as they come; `;` separators (Excel in many locales)
    too, when the header has no comma."""
    try:
        raw = path.read_bytes()
    except OSError:
        raise UserError(f"cards file {path} cannot be read", EXIT_USAGE) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise UserError(f"cards file {path} line {line}: not UTF-8 text; save it as "
                        "\"CSV UTF-8\"", EXIT_USAGE) from None
    if "\x00" in text:
        raise UserError(f"cards file {path} is not a CSV text file", EXIT_USAGE)
    first = text.split("\n", 1)[0]
    delimiter = ";" if ";" in first and "," not in first else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    try:
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue
            if header is None:
                header = [f.strip() for f in fields]
            else:
                rows.append((reader.line_num, fields))
    except csv.Error as e:
        raise UserError(f"cards file {path} line {reader.line_num}: {e}", EXIT_USAGE) from None
    if header is None:
        raise UserError(f"cards file {path} is empty: it needs the header row "
                        f"{','.join(COLUMNS)} and one row per card", EXIT_USAGE)
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise UserError(f"cards file {path}: unknown column {', '.join(repr(h) for h in unknown)}; "
                        f"the columns are {','.join(COLUMNS)} (lower case, any order)", EXIT_USAGE)
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise UserError(f"cards file {path}: column {', '.join(twice)} given twice", EXIT_USAGE)
    if "ref" not in header:
        raise UserError(f"cards file {path}: no ref column; the columns are {','.join(COLUMNS)}",
                        EXIT_USAGE)
    if not rows:
        raise UserError(f"cards file {path} has no cards (only a header): a whitelist needs at "
                        "least one card", EXIT_USAGE)
    return header, rows


def read_cards(path: Path, progress: Progress) -> list[bytes]:
    """Every card of the CSV; UserError names each bad row by its line (the first few, then
    how many more) and nothing is built from a file with any bad row."""
    header, rows = _rows(path)
    task = progress.add_task("reading cards", total=len(rows))
    out = []
    errors: list[str] = []
    seen: dict[bytes, int] = {}
    for line, fields in rows:
        try:
            if len(fields) != len(header):
                raise UserError(f"line {line}: {len(fields)} fields, the header has {len(header)}",
                                EXIT_USAGE)
            rec = parse_card(dict(zip(header, fields, strict=True)), line)
            ref = rec[:fmt.REF_LEN]
            if ref in seen:
                raise UserError(f"line {line}: ref {ref.hex()} already on line {seen[ref]}", EXIT_USAGE)
            seen[ref] = line
            out.append(rec)
        except UserError as e:
            errors.append(str(e).removeprefix("cards "))
        progress.advance(task)
    if errors:
        more = f"; and {len(errors) - MAX_LISTED} more" if len(errors) > MAX_LISTED else ""
        raise UserError(f"cards file {path}: {'; '.join(errors[:MAX_LISTED])}{more}", EXIT_USAGE)
    return out


def read_schedules(path: Path | None) -> tuple[dict[int, list[tuple[int, int, int]]], list[int]]:
    if path is None:
        return {}, []
    try:
        doc = json.loads(path.read_text())
        scheds: dict[int, list[tuple[int, int, int]]] = {}
        for sid, ivs in doc.get("schedules", {}).items():
            scheds[int(sid)] = [
                (sum(DAY_BITS[d] for d in iv["days"].lower().split()), _minute(iv["from"]), _minute(iv["to"]))
                for iv in ivs]
        holidays = [_day(h, "holidays") for h in doc.get("holidays", [])]
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:
        raise UserError(f"schedules file {path}: {e}", EXIT_USAGE) from None
    return scheds, holidays


def read_file(path: Path, key: bytes | None) -> tuple[fmt.Header, bytes, dict[bytes, bytes], bool | None]:
    """Header, schedule+holiday bytes, records by ref, tag valid (None without a key)."""
    try:
        data = path.read_bytes()
    except OSError:
        raise UserError(f"{path} cannot be read", EXIT_USAGE) from None
    try:
        hdr = fmt.parse_header(data, len(data))
    except fmt.CacheError as e:
        raise UserError(f"{path}: {e.reason}: {e.detail}") from None
    ok = None if key is None else fmt.tags_equal(fmt.hmac_sha256(key, data[:-fmt.TAG_SIZE]),
                                                 data[-fmt.TAG_SIZE:])
    off = hdr.records_offset()
    recs = {data[o:o + fmt.REF_LEN]: data[o:o + fmt.REC_SIZE]
            for o in range(off, off + hdr.count * fmt.REC_SIZE, fmt.REC_SIZE)}
    return hdr, data[fmt.HDR_SIZE:off], recs, ok


def _run(fn: Any) -> None:
    try:
        fn()
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    except fmt.CacheError as e:
        raise fail(f"{e.reason}: {e.detail}", EXIT_USAGE) from None


@cache_app.command("build")
def build(
    cards: Path = typer.Argument(..., help="Cards CSV (columns in `doorctl cache --help`)."),
    key: Path = KEY_OPT,
    out: Path = typer.Option(..., "--out", "-o", help="Snapshot file to write."),
    version: int = typer.Option(..., "--version", help="Cache version, above every version sent before."),
    site: int = typer.Option(..., "--site", help="Site id the doors check."),
    schedules: Path = typer.Option(None, "--schedules", help="Schedules and holidays JSON."),
    tz_minutes: int = typer.Option(SITE_TZ_MIN, "--tz-minutes", help="Site time offset from UTC, minutes."),
    scope: int = typer.Option(0xFFFF, "--scope", help="Door mask the cache is meant for."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as one JSON object."),
) -> None:
    """Build and sign a full snapshot from a cards CSV.

    Example: doorctl cache build cards.csv --key site.json --out whitelist.bin --version 1 --site 1001
    """

    def go() -> None:
        check_range("--version", version, 1, 2**32 - 1)
        check_range("--site", site, 0, 2**32 - 1)
        check_range("--tz-minutes", tz_minutes, -720, 840)
        check_range("--scope", scope, 1, 0xFFFF)
        k, key_site = load_key_and_site(key)
        if key_site is not None and key_site != site:
            raise UserError(f"--site {site}: the key file {key} is site {key_site}'s", EXIT_USAGE)
        scheds, holidays = read_schedules(schedules)
        err = Console(stderr=True)
        with Progress(transient=True, console=err, disable=not err.is_terminal) as progress:
            recs = read_cards(cards, progress)
        data = cache_build.build(k, fmt.KIND_SNAPSHOT, version, 0, site, scope, tz_minutes, recs, scheds,
                                 holidays, int(dt.datetime.now(dt.UTC).timestamp()))
        try:
            out.write_bytes(data)
        except OSError as e:
            raise UserError(f"--out {out}: cannot be written ({e.strerror})", EXIT_USAGE) from None
        if as_json:
            typer.echo(json.dumps({"file": str(out), "kind": "snapshot", "version": version,
                                   "site": site, "cards": len(recs), "bytes": len(data)}))
        else:
            typer.echo(f"wrote {out}: snapshot version {version}, {len(recs)} cards, {len(data)} bytes")

    _run(go)


def check_range(option: str, value: int, lo: int, hi: int) -> None:
    if not lo <= value <= hi:
        raise UserError(f"{option} {value}: must be {lo}-{hi}", EXIT_USAGE)


@cache_app.command("delta")
def delta(
    old: Path = typer.Argument(..., help="Snapshot the doors have now."),
    new: Path = typer.Argument(..., help="Snapshot to move them to."),
    key: Path = KEY_OPT,
    out: Path = typer.Option(..., "--out", "-o", help="Delta file to write."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as one JSON object."),
) -> None:
    """Sign the delta that takes doors from OLD to NEW (changed, added and removed cards).

    Example: doorctl cache delta v1.bin v2.bin --key site.json --out v1-v2.bin
    """

    def go() -> None:
        k = load_key(key)
        h0, _, r0, ok0 = read_file(old, k)
        h1, extra, r1, ok1 = read_file(new, k)
        if not (ok0 and ok1):
            raise UserError("a snapshot's tag does not match this key")
        if h0.kind != fmt.KIND_SNAPSHOT or h1.kind != fmt.KIND_SNAPSHOT or h1.version <= h0.version:
            raise UserError("give two snapshots, the newer one second", EXIT_USAGE)
        changes = [r for ref, r in r1.items() if r0.get(ref) != r]
        changes += [cache_build.pack_record(ref, 0, False, 0, 0, 0, 0, delete=True)
                    for ref in r0 if ref not in r1]
        scheds = fmt.parse_schedules(extra[:h1.sched_len])
        hol = extra[h1.sched_len:]
        holidays = [int.from_bytes(hol[i:i + 2], "big") for i in range(0, len(hol), 2)]
        data = cache_build.build(k, fmt.KIND_DELTA, h1.version, h0.version, h1.site, h1.scope, h1.tz_min,
                                 changes, scheds, holidays, h1.created)
        try:
            out.write_bytes(data)
        except OSError as e:
            raise UserError(f"--out {out}: cannot be written ({e.strerror})", EXIT_USAGE) from None
        if as_json:
            typer.echo(json.dumps({"file": str(out), "kind": "delta", "base": h0.version,
                                   "version": h1.version, "changes": len(changes), "bytes": len(data)}))
        else:
            typer.echo(f"wrote {out}: delta {h0.version} -> {h1.version}, {len(changes)} changes, "
                       f"{len(data)} bytes")

    _run(go)


def _describe(rec: bytes) -> str:
    ref, flags, start, end, groups = fmt.unpack_record(rec)
    if flags == fmt.DELETE:
        return f"{ref.hex()}  removed"
    doors = " ".join(str(d) for d in range(16) if groups >> d & 1) or "none"
    to = "no end" if end == fmt.NO_END else str(EPOCH + dt.timedelta(days=end))
    return (f"{ref.hex()}  {fmt.STATUS_NAMES[flags & 3]}  {'master' if flags & 4 else 'normal'}  "
            f"valid {EPOCH + dt.timedelta(days=start)} .. {to}  doors {doors}  schedule {flags >> 3}")


def _record(rec: bytes) -> dict[str, Any]:
    ref, flags, start, end, groups = fmt.unpack_record(rec)
    if flags == fmt.DELETE:
        return {"ref": ref.hex(), "removed": True}
    return {"ref": ref.hex(), "status": fmt.STATUS_NAMES[flags & 3],
            "class": "master" if flags & 4 else "normal",
            "valid_from": str(EPOCH + dt.timedelta(days=start)),
            "valid_to": None if end == fmt.NO_END else str(EPOCH + dt.timedelta(days=end)),
            "doors": [d for d in range(16) if groups >> d & 1], "schedule": flags >> 3}


@cache_app.command("inspect")
def inspect(
    file: Path = typer.Argument(..., help="Snapshot or delta file."),
    key: Path = typer.Option(None, "--key", "-k", help="Key file: also check the tag."),
    ref: str = typer.Option(None, "--ref", help="Show this card (16 hex digits)."),
    index: int = typer.Option(None, "--index", help="Show record number N (0 = first)."),
    as_json: bool = typer.Option(False, "--json", help="Print the header and selected records "
                                 "as one JSON object."),
) -> None:
    """Header, counts, tag check and selected records of a cache file.

    Example: doorctl cache inspect whitelist.bin --key site.json --ref 5101013aeef2e95e
    """

    def go() -> None:
        hdr, extra, recs, ok = read_file(file, load_key(key) if key else None)
        kind = "snapshot" if hdr.kind == fmt.KIND_SNAPSHOT else f"delta on version {hdr.base}"
        scheds = fmt.parse_schedules(extra[:hdr.sched_len])
        chosen: list[bytes] = []
        if ref is not None:
            try:
                want = bytes.fromhex(ref)
            except ValueError:
                want = b""
            if len(want) != fmt.REF_LEN:
                raise UserError(f"--ref {ref!r}: a card reference is 16 hex digits", EXIT_USAGE)
            if want not in recs:
                raise UserError(f"--ref {ref}: not in {file}", EXIT_FAILED)
            chosen.append(recs[want])
        if index is not None:
            if not 0 <= index < hdr.count:
                raise UserError(f"--index {index}: must be 0..{hdr.count - 1}", EXIT_USAGE)
            chosen.append(sorted(recs.values())[index])
        tag = "not checked (no --key)" if ok is None else "valid" if ok else "DOES NOT MATCH"
        if as_json:
            typer.echo(json.dumps({
                "file": str(file), "format": hdr.fmt,
                "kind": "snapshot" if hdr.kind == fmt.KIND_SNAPSHOT else "delta",
                "base": hdr.base if hdr.kind != fmt.KIND_SNAPSHOT else None,
                "version": hdr.version, "site": hdr.site, "scope": hdr.scope, "tz_minutes": hdr.tz_min,
                "cards": hdr.count, "schedules": len(scheds), "holidays": hdr.hol_count,
                "bytes": hdr.file_size(), "tag": None if ok is None else bool(ok),
                "records": [_record(r) for r in chosen]}))
        else:
            typer.echo(f"{file}: format {hdr.fmt}, {kind}, version {hdr.version}, site {hdr.site}, "
                       f"scope {hdr.scope:#06x}, tz {hdr.tz_min:+d} min")
            typer.echo(f"cards {hdr.count}, schedules {len(scheds)}, holidays {hdr.hol_count}, "
                       f"{hdr.file_size()} bytes")
            typer.echo(f"tag: {tag}")
            for rec in chosen:
                typer.echo(_describe(rec))
        if ok is False:
            raise UserError("tag does not match: the file was altered or signed with another key")

    _run(go)


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
