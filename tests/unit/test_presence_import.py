"""Admin presence CSV: parsing with per-row errors, rows in force, next change (no clock)."""

from datetime import datetime

from gateway.presence_import import in_force, next_change, parse_presence_csv

CLIENTS = {"alice", "bob"}


def ts(text):
    return datetime.fromisoformat(text).timestamp()


def test_rows_and_errors_with_line_numbers():
    rows, errors = parse_presence_csv(
        "id,client,status,start,end,info,set by\n"
        "1,alice,holiday,2026-12-20,2027-01-05,skiing,hr\n"
        "2,carol,away,,,,hr\n"
        "3,bob,dnd,2026-12-01 09:00,2026-12-01 08:00,,hr\n"
        "4,bob,meeting,tomorrow,,,hr\n"
        "5,bob,busy\n", CLIENTS)
    assert [(r.line, r.client, r.status, r.info) for r in rows] == [
        (2, "alice", "holiday", "skiing"), (6, "bob", "busy", None)]
    assert errors[0] == "line 3: unknown client 'carol'"
    assert errors[1] == "line 4: end is not after start"
    assert errors[2].startswith("line 5: bad time")


def test_in_force_and_next_change():
    rows, _ = parse_presence_csv(
        "1,alice,holiday,2026-12-20 00:00,2027-01-05 00:00,,hr\n"
        "2,alice,meeting,2026-12-22 10:00,2026-12-22 11:00,,hr\n", CLIENTS)
    assert in_force(rows, ts("2026-12-19 12:00")) == {}
    assert next_change(rows, ts("2026-12-19 12:00")) == ts("2026-12-20 00:00")
    assert in_force(rows, ts("2026-12-21 12:00"))["alice"].status == "holiday"
    assert in_force(rows, ts("2026-12-22 10:30"))["alice"].status == "meeting"  # later start wins
    assert next_change(rows, ts("2026-12-22 10:30")) == ts("2026-12-22 11:00")
    assert in_force(rows, ts("2027-01-05 00:00")) == {}
