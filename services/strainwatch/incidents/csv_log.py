"""Parse and validate an OSHA-300-like injury log in CSV (docs/incidents.md).

One row per case: case_id, date (YYYY-MM-DD), site, team, worker (optional pseudonym), body_part,
injury_type, classification (recordable | first_aid), days_away, days_restricted. Every row is
validated by `IncidentRow` (pydantic v2); an invalid row is reported with the physical line of the
file it starts on and every reason. Problems of the file itself (not UTF-8, empty, a header that
lacks or adds columns) raise `CsvLogError`: nothing in such a file can be trusted to mean what the
columns say.

Tolerated: a UTF-8 byte order mark, CRLF or CR line ends, blank lines (also lines of commas only),
whitespace around cells, header names in any case with spaces or hyphens for underscores, and
empty cells after the last column (trailing commas from spreadsheets).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from strainwatch.events import CASE_ID_PATTERN, BodyPart, Ident, Incident, Severity
from strainwatch.incidents.store import date_ts_s, incident_line

COLUMNS: tuple[str, ...] = (
    "case_id",
    "date",
    "site",
    "team",
    "worker",
    "body_part",
    "injury_type",
    "classification",
    "days_away",
    "days_restricted",
)
OPTIONAL_COLUMNS = frozenset({"worker"})
REQUIRED_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if c not in OPTIONAL_COLUMNS)

BODY_PARTS: tuple[str, ...] = ("neck", "shoulder", "upper_back", "lower_back", "other")
CLASSIFICATIONS: tuple[str, ...] = ("recordable", "first_aid")
MAX_INJURY_TYPE = 64
MAX_TEAM = 64
# A sanity bound that catches typos (a date typed into a days column); OSHA lets employers stop
# counting at 180 days, so real logs stay far below it.
MAX_DAYS = 366

# Spellings found in injury logs, after `_spelling` (lower case, runs of space/_/- as one space).
_BODY_PART_SPELLINGS: dict[str, str] = {
    "neck": "neck",
    "cervical": "neck",
    "cervical spine": "neck",
    "shoulder": "shoulder",
    "shoulders": "shoulder",
    "left shoulder": "shoulder",
    "right shoulder": "shoulder",
    "both shoulders": "shoulder",
    "rotator cuff": "shoulder",
    "upper back": "upper_back",
    "upperback": "upper_back",
    "thoracic": "upper_back",
    "thoracic spine": "upper_back",
    "lower back": "lower_back",
    "lowerback": "lower_back",
    "low back": "lower_back",
    "lumbar": "lower_back",
    "lumbar spine": "lower_back",
    "other": "other",
}
_CLASSIFICATION_SPELLINGS: dict[str, str] = {
    "recordable": "recordable",
    "first aid": "first_aid",
    "firstaid": "first_aid",
}
_CASE_ID = re.compile(CASE_ID_PATTERN)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DAYS = re.compile(r"^\d+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _spelling(value: str) -> str:
    return re.sub(r"[\s_-]+", " ", value.strip().lower())


class CsvLogError(ValueError):
    """The file as a whole cannot be read as an injury log (nothing is imported)."""


class IncidentRow(BaseModel):
    """One validated, normalised case of the log."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    case_id: str = Field(min_length=1, max_length=64)
    date: dt.date
    site: Ident
    team: str = Field(min_length=1, max_length=MAX_TEAM)
    worker: Ident | None = None
    body_part: BodyPart
    injury_type: str = Field(min_length=1, max_length=MAX_INJURY_TYPE)
    classification: Severity
    days_away: int = Field(ge=0, le=MAX_DAYS)
    days_restricted: int = Field(ge=0, le=MAX_DAYS)

    @field_validator("case_id", mode="before")
    @classmethod
    def _case_id(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip() and not _CASE_ID.match(value.strip()):
            raise PydanticCustomError(
                "case_id",
                "'{value}': letters, digits and . _ : / # - only, starting with a letter or digit",
                {"value": value.strip()},
            )
        return value

    @field_validator("date", mode="before")
    @classmethod
    def _date(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if not _DATE.match(text):
                raise PydanticCustomError("date", "'{value}' is not a date YYYY-MM-DD", {"value": text})
            try:
                return dt.date.fromisoformat(text)
            except ValueError:
                message = "'{value}' is not a calendar date"
                raise PydanticCustomError("date", message, {"value": text}) from None
        return value

    @field_validator("date")
    @classmethod
    def _not_future(cls, value: dt.date, info: ValidationInfo) -> dt.date:
        today: dt.date = (info.context or {}).get("today") or dt.datetime.now(dt.UTC).date()
        # a site east of UTC is a day ahead for part of the day: its today is at most UTC's tomorrow
        if value > today + dt.timedelta(days=1):
            raise PydanticCustomError(
                "date",
                "{value} is in the future (today is {today})",
                {"value": str(value), "today": str(today)},
            )
        return value

    @field_validator("team", "injury_type", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        if isinstance(value, str):
            if _CONTROL.search(value):
                raise PydanticCustomError("text", "control characters are not allowed")
            return " ".join(value.split())
        return value

    @field_validator("injury_type")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @field_validator("worker", mode="before")
    @classmethod
    def _optional(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("body_part", mode="before")
    @classmethod
    def _body_part(cls, value: Any) -> Any:
        if isinstance(value, str):
            known = _BODY_PART_SPELLINGS.get(_spelling(value))
            if known is None:
                raise PydanticCustomError(
                    "body_part",
                    "unknown body part '{value}': one of {allowed} (log any other part as 'other')",
                    {"value": value.strip(), "allowed": ", ".join(BODY_PARTS)},
                )
            return known
        return value

    @field_validator("classification", mode="before")
    @classmethod
    def _classification(cls, value: Any) -> Any:
        if isinstance(value, str):
            known = _CLASSIFICATION_SPELLINGS.get(_spelling(value))
            if known is None:
                raise PydanticCustomError(
                    "classification",
                    "unknown classification '{value}': recordable or first_aid",
                    {"value": value.strip()},
                )
            return known
        return value

    @field_validator("days_away", "days_restricted", mode="before")
    @classmethod
    def _days(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return 0  # OSHA logs leave the column empty when there were no such days
            if not _DAYS.match(text):
                raise PydanticCustomError(
                    "days", "'{value}' is not a whole number of days ≥ 0", {"value": text}
                )
            return int(text)
        return value

    @model_validator(mode="after")
    def _first_aid_has_no_days(self) -> IncidentRow:
        # OSHA: a case with days away or restricted work is recordable by definition
        if self.classification == "first_aid" and (self.days_away or self.days_restricted):
            raise PydanticCustomError(
                "first_aid_days",
                "first_aid with {away} days away and {restricted} restricted: a case with such days "
                "is recordable",
                {"away": self.days_away, "restricted": self.days_restricted},
            )
        return self

    @property
    def severity(self) -> str:
        return self.classification

    def to_line(self) -> str:
        return incident_line(
            self.site,
            self.team,
            self.case_id,
            self.body_part,
            self.classification,
            self.injury_type,
            self.days_away,
            self.days_restricted,
            self.date,
        )

    def to_event(self) -> Incident:
        return Incident(
            schema_version=1,
            incident_id=self.case_id,
            site_id=self.site,
            team=self.team,
            worker_id=self.worker,
            ts=dt.datetime.fromtimestamp(date_ts_s(self.date), dt.UTC),
            body_part=self.body_part,
            severity=self.classification,
            injury_type=self.injury_type,
            days_away=self.days_away,
            days_restricted=self.days_restricted,
        )


@dataclass(frozen=True)
class ParsedRow:
    line: int  # the physical line of the file the row starts on (1 = the header)
    row: IncidentRow


@dataclass(frozen=True)
class InvalidRow:
    line: int
    case_id: str | None
    reasons: tuple[str, ...]

    def describe(self) -> str:
        case = f" (case {self.case_id})" if self.case_id else ""
        return f"line {self.line}{case}: " + "; ".join(self.reasons)


@dataclass
class ParsedLog:
    source: str
    rows: list[ParsedRow] = field(default_factory=list)  # valid, one per case id, in file order
    invalid: list[InvalidRow] = field(default_factory=list)  # in line order
    duplicates: list[tuple[int, int]] = field(default_factory=list)  # (line, line it repeats)
    rows_read: int = 0  # data rows: every non-blank line (record) after the header


def _header_name(cell: str) -> str:
    return re.sub(r"[\s-]+", "_", cell.strip().lower())


def _describe_error(error: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in error["loc"])
    message = str(error["msg"])
    kind = error["type"]
    if kind == "missing":
        message = "required"
    elif kind in ("string_too_short",) and loc:
        message = "empty"
    elif kind == "string_pattern_mismatch":
        value = error.get("input", "")
        message = f"'{value}': letters, digits and . _ : - only, starting with a letter or digit"
    elif kind in ("less_than_equal", "greater_than_equal"):
        message = f"{error.get('input')}: {message.lower()}"
    elif kind == "string_too_long":
        message = f"longer than {error.get('ctx', {}).get('max_length')} characters"
    return f"{loc}: {message}" if loc else message


def decode(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise CsvLogError(
            f"{source}: not UTF-8 (byte 0x{raw[error.start]:02x} on line {line}); save the log as 'CSV UTF-8'"
        ) from None


def read_log(path: Path, *, today: dt.date | None = None) -> ParsedLog:
    """Parse and validate the file; raises CsvLogError for problems of the file as a whole."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise CsvLogError(f"{path}: cannot read: {error.strerror or error}") from None
    return parse_log(decode(raw, str(path)), source=str(path), today=today)


def parse_log(text: str, *, source: str = "<csv>", today: dt.date | None = None) -> ParsedLog:
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise CsvLogError(
            f"{source} is empty: expected a header line ({','.join(COLUMNS)}) and one line per case"
        )
    reader = csv.reader(io.StringIO(text, newline=""), strict=False)
    records = _records(reader)
    first = next(records, None)
    if first is None:
        raise CsvLogError(
            f"{source} is empty: expected a header line ({','.join(COLUMNS)}) and one line per case"
        )
    header_line, header = first
    columns = _columns(header, header_line, source)
    log = ParsedLog(source=source)
    valid: list[ParsedRow] = []
    invalid: dict[int, InvalidRow] = {}
    raw_case: dict[int, str] = {}
    context = {"today": today or dt.datetime.now(dt.UTC).date()}
    for line, cells in records:
        log.rows_read += 1
        values, problem = _cells(cells, columns)
        case_id = values.get("case_id", "").strip() or None
        if case_id:
            raw_case[line] = case_id
        if problem is not None:
            invalid[line] = InvalidRow(line, case_id, (problem,))
            continue
        try:
            row = IncidentRow.model_validate(values, context=context)
        except ValidationError as error:
            reasons = tuple(_describe_error(e) for e in error.errors(include_url=False))  # type: ignore[arg-type]
            invalid[line] = InvalidRow(line, case_id, reasons)
            continue
        valid.append(ParsedRow(line, row))
    if log.rows_read == 0:
        raise CsvLogError(f"{source} has a header but no cases (no line after line {header_line})")
    log.rows, log.duplicates, conflicts = _dedupe(valid, invalid, raw_case)
    invalid.update(conflicts)
    log.invalid = [invalid[line] for line in sorted(invalid)]
    return log


def _records(reader: Any) -> Iterator[tuple[int, list[str]]]:
    """(physical line the record starts on, cells) for every non-blank record."""
    last = 0
    for cells in reader:
        start = last + 1
        last = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        yield start, cells


def _columns(header: list[str], line: int, source: str) -> list[str]:
    names = [_header_name(c) for c in header]
    while names and not names[-1]:
        names.pop()  # trailing empty header cells (a spreadsheet's trailing commas)
    known = set(COLUMNS)
    if not known.intersection(names):
        hint = ""
        if len(names) == 1 and (";" in header[0] or "\t" in header[0]):
            hint = " (the file seems to use ';' or tabs: separate columns with commas)"
        raise CsvLogError(
            f"{source} line {line}: no header: the first line must name the columns "
            f"{','.join(COLUMNS)} (worker optional){hint}"
        )
    problems = []
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    unknown = [header[i].strip() or f"(empty, column {i + 1})" for i, n in enumerate(names) if n not in known]
    if unknown:
        problems.append(f"unknown column(s) {', '.join(unknown)}")
    repeated = sorted({n for n in names if n in known and names.count(n) > 1})
    if repeated:
        problems.append(f"column(s) named twice: {', '.join(repeated)}")
    if problems:
        raise CsvLogError(
            f"{source} line {line}: "
            + "; ".join(problems)
            + f" (expected {','.join(COLUMNS)}; worker optional)"
        )
    return names


def _cells(cells: list[str], columns: list[str]) -> tuple[dict[str, str], str | None]:
    values = dict(zip(columns, cells, strict=False))
    if any(c.strip() for c in cells[len(columns) :]) or len(cells) < len(columns):
        return values, f"{len(cells)} fields, the header has {len(columns)}"
    return values, None


def _dedupe(
    valid: list[ParsedRow], invalid: dict[int, InvalidRow], raw_case: dict[int, str]
) -> tuple[list[ParsedRow], list[tuple[int, int]], dict[int, InvalidRow]]:
    """One row per case id. The same case repeated identically counts once; a case id on rows that
    differ (or on an invalid row too) makes every row of it invalid: which one is right is unknown."""
    lines_of: dict[str, list[int]] = {}
    for line in sorted(raw_case):
        lines_of.setdefault(raw_case[line], []).append(line)
    by_line = {p.line: p for p in valid}
    kept: list[ParsedRow] = []
    duplicates: list[tuple[int, int]] = []
    conflicts: dict[int, InvalidRow] = {}
    seen: set[str] = set()
    for parsed in valid:
        case = parsed.row.case_id
        if case in seen:
            continue
        seen.add(case)
        lines = lines_of.get(case, [parsed.line])
        if len(lines) == 1:
            kept.append(parsed)
            continue
        bad = [n for n in lines if n in invalid]
        differing = [n for n in lines if n in by_line and by_line[n].row != parsed.row]
        if not bad and not differing:
            kept.append(parsed)
            duplicates.extend((n, parsed.line) for n in lines if n != parsed.line)
            continue
        for n in lines:
            if n in invalid:
                continue
            others = ", ".join(str(o) for o in lines if o != n)
            what = _differences(by_line[n].row, [by_line[o].row for o in lines if o in by_line and o != n])
            reason = f"case id {case} is also on line(s) {others} with other content" + (
                f" ({what})" if what else " (invalid there)"
            )
            conflicts[n] = InvalidRow(n, case, (reason,))
    # an invalid row whose case id is also on a valid row: say so there too
    for line, row in invalid.items():
        lines = lines_of.get(row.case_id or "", [])
        if row.case_id and len(lines) > 1:
            others = ", ".join(str(o) for o in lines if o != line)
            conflicts[line] = InvalidRow(
                line, row.case_id, (*row.reasons, f"case id {row.case_id} is also on line(s) {others}")
            )
    return kept, duplicates, conflicts


def _differences(row: IncidentRow, others: list[IncidentRow]) -> str:
    names = []
    for name in COLUMNS:
        mine = getattr(row, name)
        if any(getattr(o, name) != mine for o in others):
            names.append(name)
    return "differs in " + ", ".join(names) if names else ""
