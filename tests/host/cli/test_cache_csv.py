"""`doorctl cache build` takes a cards CSV strictly: wrong headers, bad rows (each with its
line), unordered dates, a site other than the key file's, empty, binary or non-UTF-8 input
are refused in one line with exit code 2 and nothing written; what spreadsheets write
(byte-order mark, CRLF, `;`) is read as meant."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host_tools.cards import sitekeys
from host_tools.cli import run
from offline_cache import fmt


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    path = tmp_path / "site.json"
    sitekeys.write_secret(path, sitekeys.new_site_keys(1001))
    return path


def build(capsys: pytest.CaptureFixture[str], tmp: Path, keys: Path, csv: bytes,
          *extra: str) -> tuple[int, str, str]:
    cards = tmp / "cards.csv"
    cards.write_bytes(csv)
    out = tmp / "w.bin"
    out.unlink(missing_ok=True)
    code = run(["cache", "build", str(cards), "--key", str(keys), "--out", str(out),
                "--version", "1", "--site", "1001", *extra])
    got = capsys.readouterr()
    if code != 0:
        assert not out.exists()
        assert len(got.err.strip().splitlines()) == 1 and "Traceback" not in got.err, got.err
    return code, got.out, got.err


def records(path: Path) -> list[tuple[str, int, int, int]]:
    data = path.read_bytes()
    hdr = fmt.parse_header(data, len(data))
    off = hdr.records_offset()
    out = []
    for o in range(off, off + hdr.count * fmt.REC_SIZE, fmt.REC_SIZE):
        ref, flags, start, end, groups = fmt.unpack_record(data[o:o + fmt.REC_SIZE])
        out.append((ref.hex(), flags & 3, end, groups))
    return out


REF = "5101013aeef2e95e"


@pytest.mark.parametrize(("csv", "message"), [
    (b"ref,Status\n5101013aeef2e95e,lost\n", "unknown column 'Status'; the columns are ref,status,"),
    (b"ref,door\n5101013aeef2e95e,0\n", "unknown column 'door'"),
    (b"", "is empty: it needs the header row"),
    (b"ref,status\n", "has no cards (only a header)"),
    (b"status\nactive\n", "no ref column"),
    (b"ref,status,ref\n5101013aeef2e95e,active,x\n", "column ref given twice"),
    (b"ref,valid_from,valid_to\n5101013aeef2e95e,2026-02-01,2026-01-31\n",
     "line 2: valid_to 2026-01-31 is before valid_from 2026-02-01"),
    (b"ref,status\n5101013aeef2e95e,active\n\n1111111111111111,active\n5101013aeef2e95e,lost\n",
     "line 5: ref 5101013aeef2e95e already on line 2"),
    (b"ref,status\nzz,active\n1111111111111111,gone\n", "line 2: ref must be 16 hex digits; line 3: status"),
    (b"ref,status\n5101013aeef2e95e,active,extra\n", "line 2: 3 fields, the header has 2"),
    (b"ref,status\n5101013aeef2e95e,act\xe9ve\n", "line 2: not UTF-8 text"),
    (b"\x00\x01\x02binary", "not a CSV text file"),
])
def test_wrong_input_is_one_line_with_its_place(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                site: Path, csv: bytes, message: str) -> None:
    code, _, err = build(capsys, tmp_path, site, csv)
    assert code == 2 and message in err, err


def test_many_bad_rows_are_counted(capsys: pytest.CaptureFixture[str], tmp_path: Path, site: Path) -> None:
    code, _, err = build(capsys, tmp_path, site, b"ref\n" + b"zz\n" * 9)
    assert code == 2 and "line 6: ref" in err and "line 7" not in err and "and 4 more" in err


@pytest.mark.parametrize(("extra", "message"), [
    (("--site", "1002"), "--site 1002: the key file"),
    (("--version", "-1"), "--version -1: must be 1-4294967295"),
    (("--site", "-1"), "--site -1: must be 0-4294967295"),
    (("--tz-minutes", "5000"), "--tz-minutes 5000"),
])
def test_options_out_of_range_or_not_the_key_files(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                   site: Path, extra: tuple[str, str], message: str) -> None:
    code, _, err = build(capsys, tmp_path, site, f"ref\n{REF}\n".encode(), *extra)
    assert code == 2 and message in err, err


def test_a_binary_key_file_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    key = tmp_path / "k.bin"
    key.write_bytes(bytes(range(256)))
    code, _, err = build(capsys, tmp_path, key, f"ref\n{REF}\n".encode())
    assert code == 2 and "is not text" in err


def test_spreadsheet_csv_is_read_as_meant(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          site: Path) -> None:
    csv = ("\ufeffref;status;valid_from;valid_to;doors\r\n"
           f"{REF};lost;2026-01-01;2026-12-31;0 3\r\n").encode()
    code, out, err = build(capsys, tmp_path, site, csv, "--json")
    assert code == 0, err
    assert json.loads(out)["cards"] == 1
    end = (dt.date(2026, 12, 31) - dt.date(1970, 1, 1)).days
    assert records(tmp_path / "w.bin") == [(REF, fmt.LOST, end, 0b1001)]


ROW = st.tuples(st.binary(min_size=8, max_size=8), st.sampled_from(fmt.STATUS_NAMES),
                st.sets(st.integers(0, 15)))


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(ROW, min_size=1, max_size=8, unique_by=lambda r: r[0]),
       bom=st.booleans(), crlf=st.booleans(), semicolon=st.booleans())
def test_any_spelling_of_the_same_cards_builds_the_same_records(
        tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[bytes, str, set[int]]],
        bom: bool, crlf: bool, semicolon: bool) -> None:
    tmp = tmp_path_factory.mktemp("csv")
    keys = tmp / "site.json"
    sitekeys.write_secret(keys, sitekeys.new_site_keys(1001))
    sep, nl = (";" if semicolon else ","), ("\r\n" if crlf else "\n")
    text = sep.join(["doors", "status", "ref"]) + nl + "".join(
        sep.join([" ".join(map(str, sorted(d))), s, r.hex()]) + nl for r, s, d in rows)
    cards = tmp / "c.csv"
    cards.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    out = tmp / "w.bin"
    assert run(["cache", "build", str(cards), "--key", str(keys), "--out", str(out), "--version", "1",
                "--site", "1001"]) == 0
    want = sorted((r.hex(), fmt.STATUS_NAMES.index(s), fmt.NO_END, sum(1 << d for d in doors))
                  for r, s, doors in rows)
    assert sorted(records(out)) == want


def test_delta_and_inspect_print_json(capsys: pytest.CaptureFixture[str], tmp_path: Path, site: Path) -> None:
    build(capsys, tmp_path, site, f"ref\n{REF}\n".encode())
    (tmp_path / "w.bin").rename(tmp_path / "v1.bin")
    cards = tmp_path / "cards.csv"
    cards.write_text(f"ref,status\n{REF},lost\n")
    assert run(["cache", "build", str(cards), "-k", str(site), "-o", str(tmp_path / "v2.bin"),
                "--version", "2", "--site", "1001"]) == 0
    capsys.readouterr()
    assert run(["cache", "delta", str(tmp_path / "v1.bin"), str(tmp_path / "v2.bin"), "-k", str(site), "-o",
                str(tmp_path / "d.bin"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["changes"] == 1
    assert run(["cache", "inspect", str(tmp_path / "d.bin"), "-k", str(site), "--index", "0", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["kind"] == "delta" and shown["base"] == 1 and shown["tag"] is True
    assert shown["records"][0]["ref"] == REF and shown["records"][0]["status"] == "lost"
    assert run(["cache", "inspect", str(tmp_path / "d.bin"), "--ref", "0000000000000001"]) == 1  # not in it
