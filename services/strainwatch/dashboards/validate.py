"""Checks on a dashboard's JSON that Grafana does not make (it stores all of these and answers 200).

`validate_dashboard(d, datasource_uids)` raises `DashboardInvalid` listing every problem found, each
named by dashboard (uid, else title) and panel (id and title):

- `panels` that is not a list (a string, an object), or a panel that is not an object;
- a panel without a `type`;
- a data source uid (of a panel, a target or a template variable) that is not one of
  `datasource_uids` (Grafana's own pseudo data sources `-- Grafana --`, `-- Mixed --`,
  `-- Dashboard --` and `grafana` are allowed, and `${var}` when `var` is a data source variable);
- two panels (rows' nested panels included) with the same id, or a panel without an integer id;
- a grid position outside Grafana's 24 columns: missing, non-integer, negative `x`/`y`, `w` or `h` not
  positive, or `x + w > 24`;
- a template variable used (`$var`, `${var}`, `${var:format}`, `[[var]]`) anywhere in a panel or in a
  variable's query but not defined in `templating.list`. Grafana's built-ins (`$timeFilter`,
  `$__interval`, `$__range`, `$__from`, ... see `BUILTIN_VARIABLES`) are always defined, and an
  InfluxDB target's `alias` may also use the alias patterns `$col`, `$m`, `$measurement`,
  `$tag_<key>` and `$<n>`;
- a panel that reads a field its queries do not produce.

**What a query produces.** Each InfluxQL target (`rawQuery`) is parsed the way InfluxDB names its
result columns: an `AS` alias; otherwise a function call's name, lower-cased (`SUM("x")` -> `sum`); a
field's name (`"x"` -> `x`); an expression joins the names of its calls and fields with `_`
(`sum("a") / sum("b")` -> `sum_sum`); a repeated name gets `_1`, `_2`, ... Only the outermost SELECT
counts (a subquery's columns are not the result's). With `resultFormat: table` the fields are those
columns plus one per `GROUP BY` tag key, plus `Time`; with `time_series` they are the columns (with
`alias: $col`) or the literal alias, plus `Time`. A target whose names depend on the data (`SELECT *`,
a field regex, an alias with `$tag_...` or `$<n>`, `GROUP BY *`) makes the panel's names *open*:
its reads are then not checked. Transformations add names: `calculateField` its `alias`,
`organize` its `renameByName` values.

**What a panel reads.** A field name it refers to by name: `fieldConfig.overrides[].matcher` with id
`byName`; `options.reduceOptions.fields` when it names one field (`name` or `/^name$/`; any other
regex must match at least one produced name); `options.xField`, `options.colorByField`;
`options.sortBy[].displayName`; and in transformations (checked in order, each against the names
available at that step): `organize` (keys of `excludeByName`, `indexByName`, `renameByName`),
`filterFieldsByName` (`include.names`), `calculateField` binary operands (`left`, `right`, unless a
number), `joinByField` (`byField`), `sortBy` (`sort[].field`), `groupBy` (keys of `fields`),
`filterByValue` (`filters[].fieldName`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

GRID_COLUMNS = 24

BUILTIN_VARIABLES = frozenset(
    {
        "timeFilter",
        "__timeFilter",
        "__interval",
        "__interval_ms",
        "__rate_interval",
        "__rate_interval_ms",
        "__range",
        "__range_s",
        "__range_ms",
        "__from",
        "__to",
        "__all",
        "__auto",
        "__auto_interval",
        "__dashboard",
        "__user",
        "__org",
        "__name",
        "__field",
        "__series",
        "__value",
        "__data",
        "__cell",
        "__timezone",
        "__url",
        "__url_time_range",
        "__searchFilter",
        "interval",
    }
)
BUILTIN_DATASOURCE_UIDS = frozenset({"-- Grafana --", "-- Mixed --", "-- Dashboard --", "grafana"})
ALIAS_PATTERN = re.compile(r"^(col|m|measurement|tag_\w+|\d+)$")

# $var, ${var}, ${var:fmt}, [[var]], [[var:fmt]]
_VARIABLE_USE = re.compile(
    r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}"
    r"|\[\[([A-Za-z_][A-Za-z0-9_]*)(?::[^\]]*)?\]\]"
    r"|\$([A-Za-z_][A-Za-z0-9_]*)"
)


class DashboardInvalid(ValueError):
    """A dashboard Grafana would accept but that would not work; the message lists every problem."""


# --- InfluxQL result columns ---------------------------------------------------------------------


@dataclass(frozen=True)
class QueryNames:
    """What an InfluxQL statement returns: its column names and GROUP BY tag keys (None = open)."""

    columns: tuple[str, ...] | None
    tags: tuple[str, ...] | None


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<qident>"(?:[^"\\]|\\.)*")
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<cast>::\s*[A-Za-z_]+)
  | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[a-zA-Zµ]*)
  | (?P<ident>[A-Za-z_$][A-Za-z0-9_$]*)
  | (?P<regexop>=~|!~)
  | (?P<op>[-+*/%&|^(),;=<>!.])
  | (?P<other>.)
    """,
    re.VERBOSE,
)


@dataclass
class _Tok:
    kind: str
    text: str
    depth: int = 0

    @property
    def word(self) -> str:
        return self.text.upper() if self.kind == "ident" else ""


def _tokens(query: str) -> list[_Tok]:
    """Tokens with their parenthesis depth; regex literals (after =~, !~, FROM, at an operand start in
    the field list) become one `regex` token."""
    out: list[_Tok] = []
    depth = 0
    pos = 0
    while pos < len(query):
        prev = next((t for t in reversed(out)), None)
        if query[pos] == "/" and _regex_may_start(prev):
            end = pos + 1
            while end < len(query) and query[end] != "/":
                end += 2 if query[end] == "\\" else 1
            out.append(_Tok("regex", query[pos : end + 1], depth))
            pos = end + 1
            continue
        match = _TOKEN.match(query, pos)
        assert match is not None  # the `other` alternative matches any character
        kind = match.lastgroup or "other"
        text = match.group()
        pos = match.end()
        if kind == "ws":
            continue
        if text == ")":
            depth -= 1
        out.append(_Tok(kind, text, depth))
        if text == "(":
            depth += 1
    return out


def _regex_may_start(prev: _Tok | None) -> bool:
    if prev is None:
        return True
    if prev.kind == "regexop":
        return True
    if prev.word in {"SELECT", "FROM", "AND", "OR", "WHERE", "BY"}:
        return True
    return prev.text in {",", "("}


def _unquote(tok: _Tok) -> str:
    if tok.kind == "qident":
        return re.sub(r"\\(.)", r"\1", tok.text[1:-1])
    return tok.text


def _split_top(tokens: list[_Tok], depth: int) -> list[list[_Tok]]:
    parts: list[list[_Tok]] = [[]]
    for tok in tokens:
        if tok.text == "," and tok.depth == depth:
            parts.append([])
        else:
            parts[-1].append(tok)
    return [p for p in parts if p]


def _field_name(expr: list[_Tok]) -> str | None:
    """InfluxDB's Field.Name(): alias, call name, field name, or the `_`-joined names of a binary
    expression. None when the names depend on the data (wildcard, field regex)."""
    if len(expr) >= 2 and expr[-2].word == "AS":
        return _unquote(expr[-1])
    names: list[str] = []
    i = 0
    while i < len(expr):
        tok = expr[i]
        wildcard = tok.text == "*" and (i == 0 or expr[i - 1].text in {"(", ","})
        if (tok.kind == "regex" or wildcard) and tok.depth == expr[0].depth:
            return None
        if tok.kind in {"ident", "qident"}:
            nxt = expr[i + 1] if i + 1 < len(expr) else None
            if tok.kind == "ident" and nxt is not None and nxt.text == "(":
                names.append(tok.text.lower())
                # skip the call's arguments
                depth = nxt.depth
                i += 2
                while i < len(expr) and not (expr[i].text == ")" and expr[i].depth == depth):
                    i += 1
            elif tok.kind == "ident" and tok.word == "DISTINCT":
                names.append("distinct")
                i += 2  # DISTINCT "field"
                continue
            else:
                names.append(_unquote(tok))
        i += 1
    return "_".join(names)


def influxql_result_names(query: str) -> QueryNames:
    """The column names and GROUP BY tag keys an InfluxQL SELECT returns, as InfluxDB names them.

    Non-SELECT statements (SHOW ...) return `QueryNames(None, None)` (open)."""
    tokens = _tokens(query)
    if not tokens or tokens[0].word != "SELECT":
        return QueryNames(None, None)
    try:
        from_at = next(i for i, t in enumerate(tokens) if t.word == "FROM" and t.depth == 0)
    except StopIteration:
        return QueryNames(None, None)
    fields = _split_top(tokens[1:from_at], 0)
    generated = [_field_name(f) for f in fields]
    columns: tuple[str, ...] | None
    if any(name is None for name in generated):
        columns = None
    else:
        columns = _resolve_conflicts(fields, [n for n in generated if n is not None])
    tags: tuple[str, ...] | None = ()
    for i, tok in enumerate(tokens):
        if tok.word == "GROUP" and tok.depth == 0 and i + 1 < len(tokens) and tokens[i + 1].word == "BY":
            end = next(
                (
                    j
                    for j in range(i + 2, len(tokens))
                    if tokens[j].depth == 0 and tokens[j].word in {"FILL", "ORDER", "LIMIT", "SLIMIT", "TZ"}
                ),
                len(tokens),
            )
            keys: list[str] = []
            for part in _split_top(tokens[i + 2 : end], 0):
                if part[0].word == "TIME" and len(part) > 1 and part[1].text == "(":
                    continue
                if part[0].text == "*" or part[0].kind == "regex":
                    keys = []
                    tags = None
                    break
                keys.append(_unquote(part[0]))
            if tags is not None:
                tags = tuple(keys)
    return QueryNames(columns, tags)


def _resolve_conflicts(fields: list[list[_Tok]], generated: list[str]) -> tuple[str, ...]:
    """InfluxDB's ColumnNames(): aliases first, then generated names with `_<n>` on conflict."""
    names: list[str | None] = [None] * len(fields)
    seen: dict[str, int] = {}
    for i, f in enumerate(fields):
        if len(f) >= 2 and f[-2].word == "AS":
            names[i] = generated[i]
            seen[generated[i]] = 1
    for i in range(len(fields)):
        if names[i] is not None:
            continue
        name = generated[i]
        if name in seen:
            count = seen[name]
            while True:
                resolved = f"{name}_{count}"
                if resolved not in seen:
                    seen[name] = count + 1
                    name = resolved
                    break
                count += 1
        seen[name] = seen.get(name, 0) + 1
        names[i] = name
    return tuple(n for n in names if n is not None)


# --- the dashboard -------------------------------------------------------------------------------


@dataclass
class _Report:
    dashboard: str
    problems: list[str] = field(default_factory=list)

    def add(self, where: str, problem: str) -> None:
        self.problems.append(f"dashboard {self.dashboard!r}{where}: {problem}")


def _panel_label(panel: dict[str, Any], index: int) -> str:
    pid = panel.get("id")
    title = panel.get("title")
    return f" panel {pid if pid is not None else f'#{index}'} {title!r}" if title else f" panel #{index}"


def validate_dashboard(d: dict[str, Any], datasource_uids: set[str]) -> None:
    """Raise DashboardInvalid naming every problem (see the module docstring); return None if none."""
    if not isinstance(d, dict):
        raise DashboardInvalid(f"a dashboard must be a JSON object, not {type(d).__name__}")
    report = _Report(str(d.get("uid") or d.get("title") or "<no uid>"))
    variables = _variables(d, report)
    datasource_vars = {name for name, kind in variables.items() if kind == "datasource"}
    for var in _variable_list(d):
        if isinstance(var, dict):
            where = f" variable {var.get('name')!r}"
            _check_datasource(var.get("datasource"), datasource_uids, datasource_vars, report, where)
            for key in ("query", "definition", "regex"):
                _check_uses(var.get(key), variables, report, where, alias=False)
    panels = d.get("panels")
    if not isinstance(panels, list):
        report.add("", f"panels must be a list of objects, not {type(panels).__name__}")
        raise DashboardInvalid("\n".join(report.problems))
    seen_ids: dict[int, str] = {}
    for index, panel in _all_panels(panels, report):
        label = _panel_label(panel, index)
        ptype = panel.get("type")
        if not isinstance(ptype, str) or not ptype:
            report.add(label, "panel has no type")
        pid = panel.get("id")
        if not isinstance(pid, int) or isinstance(pid, bool):
            report.add(label, f"panel id must be an integer, not {pid!r}")
        elif pid in seen_ids:
            report.add(label, f"duplicate panel id {pid} (also{seen_ids[pid]})")
        else:
            seen_ids[pid] = label
        _check_grid(panel.get("gridPos"), report, label)
        _check_datasource(panel.get("datasource"), datasource_uids, datasource_vars, report, label)
        targets = panel.get("targets") or []
        if not isinstance(targets, list):
            report.add(label, "targets must be a list")
            targets = []
        for target in targets:
            if not isinstance(target, dict):
                report.add(label, f"target {target!r} is not an object")
                continue
            tlabel = f"{label} target {target.get('refId')!r}"
            _check_datasource(target.get("datasource"), datasource_uids, datasource_vars, report, tlabel)
            for key, value in target.items():
                _check_uses(value, variables, report, tlabel, alias=key == "alias")
        for key, value in panel.items():
            if key not in {"targets", "panels"}:
                _check_uses(value, variables, report, label, alias=False)
        if ptype != "row":
            _check_reads(panel, [t for t in targets if isinstance(t, dict)], report, label)
    if report.problems:
        raise DashboardInvalid("\n".join(report.problems))


def _variable_list(d: dict[str, Any]) -> list[Any]:
    templating = d.get("templating") or {}
    lst = templating.get("list") if isinstance(templating, dict) else None
    return lst if isinstance(lst, list) else []


def _variables(d: dict[str, Any], report: _Report) -> dict[str, str]:
    templating = d.get("templating")
    if templating is not None and not (
        isinstance(templating, dict) and isinstance(templating.get("list", []), list)
    ):
        report.add("", "templating.list must be a list of variables")
    out: dict[str, str] = {}
    for var in _variable_list(d):
        if not isinstance(var, dict) or not isinstance(var.get("name"), str) or not var.get("name"):
            report.add("", f"template variable without a name: {var!r}")
            continue
        if var["name"] in out:
            report.add("", f"template variable {var['name']!r} defined twice")
        out[var["name"]] = str(var.get("type", ""))
    return out


def _all_panels(panels: list[Any], report: _Report) -> Iterator[tuple[int, dict[str, Any]]]:
    index = 0
    for panel in panels:
        if not isinstance(panel, dict):
            report.add(f" panel #{index}", f"a panel must be an object, not {type(panel).__name__} {panel!r}")
            index += 1
            continue
        yield index, panel
        index += 1
        nested = panel.get("panels")
        if panel.get("type") == "row" and nested:
            if not isinstance(nested, list):
                report.add(_panel_label(panel, index - 1), "a row's panels must be a list")
                continue
            for inner in nested:
                if not isinstance(inner, dict):
                    report.add(f" panel #{index}", f"a panel must be an object, not {inner!r}")
                else:
                    yield index, inner
                index += 1


def _check_grid(grid: Any, report: _Report, label: str) -> None:
    if not isinstance(grid, dict):
        report.add(label, "panel has no gridPos")
        return
    values = {k: grid.get(k) for k in ("x", "y", "w", "h")}
    bad = [k for k, v in values.items() if not isinstance(v, int) or isinstance(v, bool)]
    if bad:
        report.add(label, f"gridPos {', '.join(bad)} must be integers ({grid})")
        return
    x, y, w, h = values["x"], values["y"], values["w"], values["h"]
    assert x is not None and y is not None and w is not None and h is not None
    if x < 0 or y < 0:
        report.add(label, f"gridPos x and y must not be negative (x={x}, y={y})")
    if w <= 0 or h <= 0:
        report.add(label, f"gridPos w and h must be positive (w={w}, h={h})")
    if x + w > GRID_COLUMNS:
        report.add(label, f"gridPos outside the {GRID_COLUMNS} columns: x={x} + w={w} > {GRID_COLUMNS}")


def _check_datasource(
    ref: Any, uids: set[str], datasource_vars: set[str], report: _Report, label: str
) -> None:
    if ref is None:
        return
    if not isinstance(ref, dict):
        report.add(label, f"datasource must be an object with a uid, not {ref!r}")
        return
    uid = ref.get("uid")
    if uid is None:
        return  # {"type": "influxdb"} alone: the default data source of that type
    if not isinstance(uid, str):
        report.add(label, f"datasource uid must be a string, not {uid!r}")
        return
    if uid in uids or uid in BUILTIN_DATASOURCE_UIDS:
        return
    match = _VARIABLE_USE.fullmatch(uid)
    if match:
        name = next(g for g in match.groups() if g)
        if name in datasource_vars:
            return
    report.add(label, f"data source uid {uid!r} does not exist (known: {', '.join(sorted(uids)) or 'none'})")


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def variable_uses(text: str) -> set[str]:
    """The variable names a string uses ($var, ${var}, ${var:fmt}, [[var]])."""
    return {next(g for g in m.groups() if g) for m in _VARIABLE_USE.finditer(text)}


def _check_uses(value: Any, variables: dict[str, str], report: _Report, label: str, alias: bool) -> None:
    for text in _strings(value):
        for name in sorted(variable_uses(text)):
            if name in variables or name in BUILTIN_VARIABLES:
                continue
            if alias and ALIAS_PATTERN.match(name):
                continue
            report.add(label, f"template variable ${name} is used but not defined")


# --- fields produced and read ------------------------------------------------------------------


def target_fields(target: dict[str, Any]) -> set[str] | None:
    """The field names an InfluxQL target gives its panel (None = open: depends on the data)."""
    query = target.get("query")
    if not isinstance(query, str) or not target.get("rawQuery", False):
        return None
    names = influxql_result_names(query)
    if names.columns is None:
        return None
    fmt = target.get("resultFormat", "time_series")
    if fmt == "table":
        if names.tags is None:
            return None
        return {"Time", *names.columns, *names.tags}
    alias = target.get("alias")
    if not alias or alias == "$col":
        return {"Time", *names.columns}
    if "$" in alias or "[[" in alias:
        return None
    return {"Time", alias}


def _is_number(value: Any) -> bool:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def _operand(value: Any) -> str | None:
    """A calculateField operand's field name, or None when it is a number / not a field."""
    if isinstance(value, dict):
        matcher = value.get("matcher")
        if isinstance(matcher, dict) and matcher.get("id") == "byName":
            opt = matcher.get("options")
            return opt if isinstance(opt, str) else None
        return None
    if isinstance(value, str) and value and not _is_number(value):
        return value
    return None


def _transformation_reads(t: dict[str, Any]) -> tuple[list[str], dict[str, str], list[str]]:
    """(names read, renames old->new, names added) of one transformation."""
    tid = t.get("id")
    opts = t.get("options") or {}
    reads: list[str] = []
    renames: dict[str, str] = {}
    added: list[str] = []
    if tid == "organize":
        for key in ("excludeByName", "indexByName", "renameByName"):
            reads.extend((opts.get(key) or {}).keys())
        renames = {k: v for k, v in (opts.get("renameByName") or {}).items() if v}
    elif tid == "filterFieldsByName":
        reads.extend((opts.get("include") or {}).get("names") or [])
    elif tid == "calculateField":
        binary = opts.get("binary") or {}
        for side in ("left", "right"):
            name = _operand(binary.get(side))
            if name:
                reads.append(name)
        if opts.get("alias"):
            added.append(opts["alias"])
    elif tid == "joinByField":
        if opts.get("byField"):
            reads.append(opts["byField"])
    elif tid == "sortBy":
        reads.extend(s.get("field") for s in opts.get("sort") or [] if s.get("field"))
    elif tid == "groupBy":
        reads.extend((opts.get("fields") or {}).keys())
    elif tid == "filterByValue":
        reads.extend(f.get("fieldName") for f in opts.get("filters") or [] if f.get("fieldName"))
    return reads, renames, added


def _panel_reads(panel: dict[str, Any]) -> list[str]:
    reads: list[str] = []
    field_config = panel.get("fieldConfig") or {}
    for override in field_config.get("overrides") or []:
        matcher = (override or {}).get("matcher") or {}
        if matcher.get("id") == "byName" and isinstance(matcher.get("options"), str):
            reads.append(matcher["options"])
    options = panel.get("options") or {}
    for key in ("xField", "colorByField"):
        if isinstance(options.get(key), str) and options[key]:
            reads.append(options[key])
    for sort in options.get("sortBy") or []:
        if isinstance(sort, dict) and sort.get("displayName"):
            reads.append(sort["displayName"])
    return reads


def _reduce_fields(panel: dict[str, Any]) -> str:
    options = panel.get("options") or {}
    reduce = options.get("reduceOptions") or {}
    value = reduce.get("fields")
    return value if isinstance(value, str) else ""


def _check_reads(panel: dict[str, Any], targets: list[dict[str, Any]], report: _Report, label: str) -> None:
    available: set[str] = set()
    for target in targets:
        names = target_fields(target)
        if names is None:
            return  # open: the names depend on the data
        available |= names
    if not targets:
        return
    for t in panel.get("transformations") or []:
        if not isinstance(t, dict):
            report.add(label, f"transformation {t!r} is not an object")
            continue
        reads, renames, added = _transformation_reads(t)
        for name in reads:
            if name not in available:
                report.add(
                    label,
                    f"transformation {t.get('id')!r} reads field {name!r}, which its queries do not "
                    f"produce (they produce {', '.join(sorted(available))})",
                )
        available = {renames.get(n, n) for n in available} | set(added)
    for name in _panel_reads(panel):
        if name not in available:
            report.add(
                label,
                f"reads field {name!r}, which its queries do not produce "
                f"(they produce {', '.join(sorted(available))})",
            )
    pattern = _reduce_fields(panel)
    if pattern:
        exact = re.fullmatch(r"/\^(.*)\$/", pattern)
        if exact and re.escape(re.sub(r"\\(.)", r"\1", exact.group(1))) == exact.group(1):
            name = re.sub(r"\\(.)", r"\1", exact.group(1))
            if name not in available:
                report.add(
                    label,
                    f"reduceOptions.fields reads field {name!r}, which its queries do not produce "
                    f"(they produce {', '.join(sorted(available))})",
                )
        elif pattern.startswith("/") and pattern.endswith("/") and len(pattern) > 1:
            try:
                regex = re.compile(pattern[1:-1])
            except re.error as error:
                report.add(label, f"reduceOptions.fields {pattern!r} is not a valid regex: {error}")
                return
            if not any(regex.search(n) for n in available):
                report.add(label, f"reduceOptions.fields {pattern!r} matches none of {sorted(available)}")
        elif pattern not in available:
            report.add(
                label,
                f"reduceOptions.fields reads field {pattern!r}, which its queries do not produce "
                f"(they produce {', '.join(sorted(available))})",
            )
