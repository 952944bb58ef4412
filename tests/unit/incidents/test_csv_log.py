"""The injury log CSV: every kind of bad row is reported with its physical line and reason; file-level
problems are clear errors; spellings normalise; BOM, CRLF and stray whitespace are harmless."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import jsonschema
import pytest

from strainwatch.incidents.csv_log import (
    BODY_PARTS,
    COLUMNS,
    CsvLogError,
    ParsedLog,
    parse_log,
    read_log,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
TODAY = dt.date(2026, 11, 29)
HEADER = ",".join(COLUMNS)


def parse(*lines: str, header: str = HEADER) -> ParsedLog:
    return parse_log("\n".join([header, *lines]) + "\n", source="log.csv", today=TODAY)


def row(
    case: str = "C-1",
    date: str = "2026-11-02",
    site: str = "plant-1",
    team: str = "team-a",
    worker: str = "",
    body_part: str = "neck",
    injury_type: str = "strain",
    classification: str = "recordable",
    days_away: str = "0",
    days_restricted: str = "0",
) -> str:
    cells = [
        case,
        date,
        site,
        team,
        worker,
        body_part,
        injury_type,
        classification,
        days_away,
        days_restricted,
    ]
    return ",".join(cells)


def only_invalid(log: ParsedLog) -> tuple[int, str]:
    assert len(log.invalid) == 1, log.invalid
    bad = log.invalid[0]
    return bad.line, "; ".join(bad.reasons)


# --- a good log -----------------------------------------------------------------------------------


def test_a_valid_row_becomes_a_normalised_case() -> None:
    log = parse(row(worker="w-0001", body_part="neck", days_away="2", days_restricted="3"))
    assert log.rows_read == 1 and not log.invalid and not log.duplicates
    (parsed,) = log.rows
    assert parsed.line == 2
    r = parsed.row
    assert (r.case_id, r.date, r.site, r.team, r.worker) == (
        "C-1",
        dt.date(2026, 11, 2),
        "plant-1",
        "team-a",
        "w-0001",
    )
    assert (r.body_part, r.injury_type, r.classification, r.days_away, r.days_restricted) == (
        "neck",
        "strain",
        "recordable",
        2,
        3,
    )


@pytest.mark.parametrize(
    ("written", "normalised"),
    [
        ("neck", "neck"),
        ("Neck", "neck"),
        ("shoulder", "shoulder"),
        ("Shoulder", "shoulder"),
        ("Right shoulder", "shoulder"),
        ("upper back", "upper_back"),
        ("Upper Back", "upper_back"),
        ("upper-back", "upper_back"),
        ("UPPER_BACK", "upper_back"),
        ("  upper   back ", "upper_back"),
        ("thoracic", "upper_back"),
        ("lower back", "lower_back"),
        ("Low back", "lower_back"),
        ("lumbar", "lower_back"),
        ("Other", "other"),
    ],
)
def test_body_part_spellings_normalise(written: str, normalised: str) -> None:
    (parsed,) = parse(row(body_part=written)).rows
    assert parsed.row.body_part == normalised


@pytest.mark.parametrize(
    ("written", "normalised"),
    [("recordable", "recordable"), ("Recordable", "recordable"), ("first aid", "first_aid"),
     ("First-Aid", "first_aid"), ("first_aid", "first_aid")],
)  # fmt: skip
def test_classification_spellings_normalise(written: str, normalised: str) -> None:
    (parsed,) = parse(row(classification=written)).rows
    assert parsed.row.classification == normalised


def test_injury_type_is_lower_case_with_single_spaces_and_team_is_trimmed() -> None:
    (parsed,) = parse(row(injury_type="  Muscle   Strain ", team="  Assembly A  ")).rows
    assert parsed.row.injury_type == "muscle strain"
    assert parsed.row.team == "Assembly A"


def test_empty_day_counts_are_zero_and_worker_is_optional() -> None:
    (parsed,) = parse(row(days_away="", days_restricted=" ", worker=" ")).rows
    assert (parsed.row.days_away, parsed.row.days_restricted, parsed.row.worker) == (0, 0, None)


def test_worker_column_may_be_absent() -> None:
    header = ",".join(c for c in COLUMNS if c != "worker")
    log = parse("C-9,2026-11-02,plant-1,team-a,neck,strain,recordable,1,0", header=header)
    (parsed,) = log.rows
    assert parsed.row.worker is None and parsed.row.days_away == 1


def test_bom_crlf_trailing_whitespace_header_spelling_and_trailing_commas() -> None:
    header = (
        "\ufeffCase ID , Date,Site,Team,Worker,Body Part,Injury-Type,CLASSIFICATION,Days Away,"
        "Days Restricted,,"
    )
    text = "\r\n".join(
        [
            header,
            "C-1 , 2026-11-02 ,plant-1 , team-a ,, Upper back , strain ,recordable , 2 , 0 ,,",
            "",
            "C-2,2026-11-03,plant-2,team-b,w-2,shoulder,sprain,first aid,,   ",
            ",,,,,,,,,",
        ]
    )
    log = parse_log(text + "\r\n", source="excel.csv", today=TODAY)
    assert not log.invalid
    assert [(p.line, p.row.case_id, p.row.body_part) for p in log.rows] == [
        (2, "C-1", "upper_back"),
        (4, "C-2", "shoulder"),
    ]
    assert log.rows_read == 2  # blank lines and lines of commas are not rows


def test_bom_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_bytes(("\ufeff" + HEADER + "\r\n" + row() + "\r\n").encode("utf-8"))
    (parsed,) = read_log(path, today=TODAY).rows
    assert parsed.row.case_id == "C-1"


def test_the_sample_log_is_valid_and_covers_two_sites_and_every_body_part() -> None:
    log = read_log(REPO / "examples" / "incidents-sample.csv", today=TODAY)
    assert not log.invalid and not log.duplicates
    assert len(log.rows) >= 12
    assert len({p.row.site for p in log.rows}) >= 2
    assert len({p.row.team for p in log.rows}) >= 3
    assert {p.row.body_part for p in log.rows} == set(BODY_PARTS)
    assert {p.row.classification for p in log.rows} == {"recordable", "first_aid"}


# --- bad rows: line and reason --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (row(date="02/11/2026"), "date: '02/11/2026' is not a date YYYY-MM-DD"),
        (row(date="2026-02-30"), "date: '2026-02-30' is not a calendar date"),
        (row(date="2026-12-01"), "date: 2026-12-01 is in the future (today is 2026-11-29)"),
        (row(date=""), "date: '' is not a date YYYY-MM-DD"),
        (row(body_part="knee"), "body_part: unknown body part 'knee'"),
        (row(body_part=""), "body_part: unknown body part ''"),
        (row(classification="lost time"), "classification: unknown classification 'lost time'"),
        (row(days_away="-1"), "days_away: '-1' is not a whole number of days ≥ 0"),
        (row(days_restricted="2.5"), "days_restricted: '2.5' is not a whole number of days ≥ 0"),
        (row(days_away="three"), "days_away: 'three' is not a whole number of days ≥ 0"),
        (row(days_away="20261102"), "days_away: 20261102: input should be less than or equal to 366"),
        (row(classification="first aid", days_away="2"), "a case with such days is recordable"),
        (row(case=""), "case_id: empty"),
        (row(case="C 1"), "case_id: 'C 1': letters, digits"),
        (row(case="C'1"), "case_id: 'C'1': letters, digits"),
        (row(site=""), "site: empty"),
        (row(site="plant 1"), "site: 'plant 1': letters, digits"),
        (row(team=""), "team: empty"),
        (row(team="t" * 65), "team: longer than 64 characters"),
        (row(worker="jane.doe@example.com"), "worker: 'jane.doe@example.com': letters, digits"),
        (row(injury_type=""), "injury_type: empty"),
        (row(injury_type="x" * 65), "injury_type: longer than 64 characters"),
        (row() + ",extra", "11 fields, the header has 10"),
        (",".join(row().split(",")[:8]), "8 fields, the header has 10"),
    ],
)
def test_each_kind_of_bad_row_is_reported_with_its_line(bad: str, reason: str) -> None:
    log = parse(row(case="OK-1"), "", bad, row(case="OK-2"))
    line, reasons = only_invalid(log)
    assert line == 4  # header 1, good row 2, blank 3
    assert reason in reasons
    assert [p.row.case_id for p in log.rows] == ["OK-1", "OK-2"]


def test_every_problem_of_a_row_is_listed() -> None:
    log = parse(row(date="yesterday", body_part="knee", days_away="-3"))
    _, reasons = only_invalid(log)
    assert "date:" in reasons and "body_part:" in reasons and "days_away:" in reasons


def test_line_numbers_are_physical_lines_after_a_quoted_multiline_cell() -> None:
    log = parse(
        row(case="A"),
        'B,2026-11-02,plant-1,"team\nwith a line break",,neck,strain,recordable,0,0',
        row(case="C", body_part="elbow"),
    )
    assert [i.line for i in log.invalid] == [3, 5]
    assert "control characters" in log.invalid[0].reasons[0]
    assert log.invalid[1].case_id == "C"


def test_many_invalid_rows_are_all_listed_in_line_order() -> None:
    lines = [row(case=f"C-{i}", body_part="knee" if i % 3 == 0 else "neck") for i in range(30)]
    log = parse(*lines)
    assert [i.line for i in log.invalid] == [i + 2 for i in range(30) if i % 3 == 0]
    assert len(log.rows) == 20


# --- duplicates -----------------------------------------------------------------------------------


def test_an_identical_repeat_counts_once() -> None:
    log = parse(
        row(case="C-1", body_part="Upper back"), row(case="C-2"), row(case="C-1", body_part="upper_back")
    )
    assert [p.row.case_id for p in log.rows] == ["C-1", "C-2"]
    assert log.duplicates == [(4, 2)]
    assert not log.invalid and log.rows_read == 3


def test_a_case_id_with_conflicting_rows_is_invalid_on_every_line() -> None:
    log = parse(row(case="C-1", body_part="neck"), row(case="C-2"), row(case="C-1", body_part="shoulder"))
    assert [(i.line, i.case_id) for i in log.invalid] == [(2, "C-1"), (4, "C-1")]
    assert (
        "case id C-1 is also on line(s) 4 with other content (differs in body_part)" in log.invalid[0].reasons
    )
    assert (
        "case id C-1 is also on line(s) 2 with other content (differs in body_part)" in log.invalid[1].reasons
    )
    assert [p.row.case_id for p in log.rows] == ["C-2"]


def test_a_case_id_on_a_valid_and_an_invalid_row_is_invalid_on_both() -> None:
    log = parse(row(case="C-1"), row(case="C-1", date="2026-13-01"))
    assert [i.line for i in log.invalid] == [2, 3]
    assert any("also on line(s) 3" in r for r in log.invalid[0].reasons)
    assert any("not a calendar date" in r for r in log.invalid[1].reasons)
    assert any("also on line(s) 2" in r for r in log.invalid[1].reasons)
    assert not log.rows


# --- the file as a whole --------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n", "  \r\n", "\ufeff", ",,,\n"])
def test_an_empty_file_is_a_clear_error(text: str) -> None:
    with pytest.raises(CsvLogError, match=r"log\.csv is empty: expected a header line"):
        parse_log(text, source="log.csv", today=TODAY)


def test_a_header_without_rows_is_a_clear_error() -> None:
    with pytest.raises(CsvLogError, match=r"has a header but no cases"):
        parse_log(HEADER + "\r\n\r\n", source="log.csv", today=TODAY)


def test_missing_columns_are_named() -> None:
    header = HEADER.replace(",days_restricted", "").replace("site,", "")
    with pytest.raises(CsvLogError, match=r"line 1: missing column\(s\) site, days_restricted"):
        parse("x", header=header)


def test_unknown_columns_are_named() -> None:
    with pytest.raises(CsvLogError, match=r"unknown column\(s\) Supervisor"):
        parse(row() + ",Smith", header=HEADER + ",Supervisor")


def test_a_column_named_twice_is_an_error() -> None:
    with pytest.raises(CsvLogError, match=r"named twice: team"):
        parse(row() + ",x", header=HEADER + ",Team")


def test_a_file_without_header_is_an_error() -> None:
    with pytest.raises(CsvLogError, match=r"no header: the first line must name the columns"):
        parse_log(row() + "\n" + row(case="C-2") + "\n", source="log.csv", today=TODAY)


def test_semicolons_get_a_hint() -> None:
    with pytest.raises(CsvLogError, match=r"separate columns with commas"):
        parse_log(HEADER.replace(",", ";") + "\n" + row().replace(",", ";") + "\n", source="x", today=TODAY)


def test_a_file_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_bytes((HEADER + "\n" + row(team="Équipe") + "\n").encode("cp1252"))
    with pytest.raises(CsvLogError, match=r"not UTF-8 \(byte 0xc9 on line 2\)"):
        read_log(path, today=TODAY)


# --- what a row becomes ---------------------------------------------------------------------------


def test_a_row_becomes_an_incident_message_valid_against_the_committed_schema() -> None:
    (parsed,) = parse(row(worker="w-7", body_part="Upper back", days_away="4", days_restricted="1")).rows
    event = parsed.row.to_event()
    doc = json.loads(event.model_dump_json())
    schema = json.loads((REPO / "schemas" / "incident.v1.schema.json").read_text())
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(doc)
    assert doc == {
        "schema_version": 1,
        "incident_id": "C-1",
        "site_id": "plant-1",
        "team": "team-a",
        "worker_id": "w-7",
        "ts": "2026-11-02T00:00:00Z",
        "body_part": "upper_back",
        "severity": "recordable",
        "injury_type": "strain",
        "days_away": 4,
        "days_restricted": 1,
    }


def test_a_row_becomes_an_incident_line() -> None:
    (parsed,) = parse(row(team="Assembly A", injury_type="Muscle strain", days_away="4")).rows
    expected_ts = int(dt.datetime(2026, 11, 2, tzinfo=dt.UTC).timestamp())
    assert parsed.row.to_line() == (
        r"incident,body_part=neck,case_id=C-1,injury_type=muscle\ strain,severity=recordable,site=plant-1,"
        rf"team=Assembly\ A count=1i,days_away=4i,days_restricted=0i {expected_ts}"
    )


def test_tomorrow_in_utc_is_still_today_somewhere_east() -> None:
    (parsed,) = parse(row(date="2026-11-30")).rows
    assert parsed.row.date == dt.date(2026, 11, 30)
