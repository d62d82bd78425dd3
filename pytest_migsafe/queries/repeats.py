"""The N+1 rule: statements and ORM loads grouped by where they repeat.

Two kinds of evidence, each where it is exact:

- **ORM loads** (:mod:`pytest_migsafe.queries.orm` for SQLAlchemy): a relationship lazy-loaded,
  or a deferred column loaded, for a second parent row of one query is an N+1, however
  small the test data: the ORM says which statement is a per-row load.
- **Repeated statements** (Core, ``text()``, raw psycopg, raw Django SQL: no ORM knows what
  a row is): one statement shape repeated at least the threshold from one application
  function, counted across that function's lines (two loops of 6 in one function are 12)
  and attributed to the frame that loops, with the chain down to the sender
  (``app/service.py:13 via app/repo.py:40``).

Not suspects: statements sent straight from a test module or conftest (the test's own
arrangement: they still count toward budgets), the statements of one ORM flush (one unit
of work sends one INSERT per row: counted once per flush), and paginated reads (a shape
with ``OFFSET``, or ``LIMIT`` with ``ORDER BY`` and a range bound: keyset pagination).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_migsafe.queries import dispatch
from pytest_migsafe.queries.callsite import Origin, Position, flush_senders, holds_line, line_of
from pytest_migsafe.queries.dispatch import ReadableShape, readable_shape, recording
from pytest_migsafe.report.record import NPlusOne

AllowRule = tuple["re.Pattern[str] | str", int]

# OFFSET the keyword (not a column "offset" or t.offset)
_OFFSET = re.compile(r"(?<![\"\w.`])OFFSET(?![\"\w`])", re.I)
_KEYSET = re.compile(r"\bORDER\s+BY\b.*\b(LIMIT|FETCH\s+(FIRST|NEXT))\b", re.I | re.S)
# a </> bound that is a parameter: bare (?, %s, %(name)s, $1, :name), cast (CAST(? AS INT),
# ?::int: the psycopg dialect casts every bound), or in a row value ((a, id) > (?, ?)); not
# <> / != (not equal), ->, ->> (JSON paths)
_RANGE = re.compile(r"(?<![-<>=!])[<>](?![<>])=?\s*(\(\s*)?(CAST\s*\(\s*)?(\?|%s|%\(\w+\)s|\$\d+|:\w+)", re.I)
_page_shaped: dict[str, bool] = {}  # text -> is_pagination(text) (bounded: cleared past PAGE_SHAPES_KEPT)
PAGE_SHAPES_KEPT = 4096


def is_pagination(shape: str) -> bool:
    """True for a read shaped like a page: ``OFFSET``, or ``ORDER BY ... LIMIT`` (or ``FETCH
    FIRST``) with a ``<``/``>`` bound that is a parameter (also cast, or in a row value: a
    keyset). Whether its repeats are pages is :func:`pages_advance`'s question. Worked out once
    per text (the scan of a long ORM text costs tens of microseconds)."""
    found = _page_shaped.get(shape)
    if found is None:
        found = bool(_OFFSET.search(shape) or (_KEYSET.search(shape) and _RANGE.search(shape)))
        if len(_page_shaped) >= PAGE_SHAPES_KEPT:
            _page_shaped.clear()
        _page_shaped[shape] = found
    return found


# a placeholder: ? / %s (by position), %(name)s / :name (by name), $n (the n-th)
_PLACEHOLDER = re.compile(r"\?|%s|%\((\w+)\)s|\$(\d+)|(?<![:\w]):(\w+)")
_FORMAT_STYLE = re.compile(r"%s|%\((\w+)\)s|(?!x)x(\d)(\w)?")  # (groups as _PLACEHOLDER's; 2, 3 never match)
_OFFSET_CLAUSE = _OFFSET
_CLAUSE_END = re.compile(r"\b(?:FETCH|FOR|LIMIT|UNION|WHERE|AND|OR)\b|;|[()]", re.I)
# a < / > bound (not <>, ->, ->>, <=>): then a row value "(", a CAST, or the bound itself
_BOUND = re.compile(r"(?<![-<>=!])[<>]=?(?![<>])\s*(\()?", re.I)
_paging_keys: dict[str, tuple[Any, ...] | None] = {}  # text -> its paging_keys (bounded)
PAGING_KEYS_KEPT = 1024


def paging_keys(sql: str) -> tuple[Any, ...] | None:
    """Where a page-shaped text's paging values are in its parameters: the key (a position, or
    a name) of each placeholder of its OFFSET clause (the whole expression: ``:size * (:page
    - 1)``) and of each ``<``/``>`` bound (the first placeholder after it, or every one of a
    row value ``(a, id) > (?, ?)``). None when it has none. Worked out once per text."""
    if sql in _paging_keys:
        return _paging_keys[sql]
    spans = []
    for found in _OFFSET_CLAUSE.finditer(sql):
        spans.append((found.end(), _offset_end(sql, found.end()), True))
    for found in _BOUND.finditer(sql):
        if found.group(1) and not sql[found.end():found.end() + 4].upper().startswith("CAST"):
            close = sql.find(")", found.end())
            spans.append((found.end(), close if close >= 0 else len(sql), True))  # a row value: all of it
        else:
            spans.append((found.end(), min(len(sql), found.end() + 40), False))  # the bound: its first
    keys: list[Any] = []
    taken = set()
    position = 0
    # one style of placeholders a text: psycopg's %s / %(name)s leave a ? (jsonb's operator) or
    # a :name alone
    style = _FORMAT_STYLE if "%s" in sql or "%(" in sql else _PLACEHOLDER
    for found in style.finditer(sql):
        name = found.group(1) or found.group(3)
        number = found.group(2)
        if name is None and number is None:
            key: Any = position
            position += 1
        else:
            key = name if name is not None else int(number) - 1
        for index, (start, end, every) in enumerate(spans):
            if start <= found.start() < end and (every or index not in taken):
                taken.add(index)
                keys.append(key)
                break
    result = tuple(keys) or None
    if len(_paging_keys) >= PAGING_KEYS_KEPT:
        _paging_keys.clear()
    _paging_keys[sql] = result
    return result


def _offset_end(sql: str, start: int) -> int:
    """Where the OFFSET expression starting at ``start`` ends: at a clause keyword, a ``;`` or a
    parenthesis closing what it is in (a CTE's, a subquery's), its own parentheses included."""
    depth = 0
    for found in _CLAUSE_END.finditer(sql, start):
        token = found.group(0)
        if token == "(":
            depth += 1
        elif token == ")":
            if depth == 0:
                return found.start()
            depth -= 1
        elif depth == 0:
            return found.start()
    return len(sql)


def paging_values(keys: tuple[Any, ...] | None, params: Any) -> list[Any] | None:
    """The values ``params`` binds to the placeholders ``keys`` (:func:`paging_keys`), read now
    (a parameters object the caller changes in place for the next page is read as it is
    when the statement ran); None when they cannot be told."""
    if keys is None or params is None or isinstance(params, (str, bytes)):
        return None
    try:
        return [params[key] for key in keys]
    except (LookupError, TypeError, ValueError):
        return None


def pages_advance(first: list[Any] | None, last: list[Any] | None) -> bool:
    """True when repeats of a page-shaped read are pages: the paging values of the first and
    the last differ (an OFFSET or a keyset bound moved on), or they are unknown. The same
    values each time (``OFFSET 0``, ``amount > 100`` in a loop over parent rows, with the
    rows' key in an equality) make a per-row loop, not pages."""
    if first is None or last is None or len(first) != len(last):
        return True
    try:
        return any(a is not b and bool(a != b) for a, b in zip(first, last))
    except Exception:  # a value whose comparison is not a truth value: told as pages
        return True


@dataclass
class StatementGroup:
    """Statements of one shape key (:func:`~pytest_migsafe.queries.dispatch.shape_key`) from
    one application function (the looping frame's); ``sample_sql``: the first one's text."""

    shape: str
    sample_sql: str
    count: int = 0
    lines: dict[Position, int] = field(default_factory=dict)  # the looping frame's position -> repeats
    inner: list[Position] = field(default_factory=list)  # the chain below the loop, first seen
    flushes: set[int] = field(default_factory=set)
    # a page-shaped read's paging values (paging_values) of its first and its last statement
    first_page: list[Any] | None = None
    last_page: list[Any] | None = None


@dataclass
class QueryLoads:
    """The loads of one :class:`LoadGroup` for the rows of one query: the rows (``parents``),
    the loads, the lines they came from and the chain below the first one."""

    loaded_at: str | None  # where the query ran (None: unknown)
    inner: list[Position]
    count: int = 0
    parents: set[int] = field(default_factory=set)
    lines: dict[Position, int] = field(default_factory=dict)  # the looping frame's position -> loads
    via: EagerPath | None = None  # the eager loads that brought the parents into the query, if any

    def copy(self) -> QueryLoads:
        """A copy that later loads leave as it is."""
        return QueryLoads(self.loaded_at, self.inner, self.count, set(self.parents), dict(self.lines), self.via)


#: How the parent rows of a load came into their query when an eager load brought them:
#: ``(the query's entity class name, (("Book.author", "MANYTOONE"), ...))``, each relationship
#: on the way with its direction (SQLAlchemy's ``InstanceState.load_path``)
EagerPath = tuple[str, tuple[tuple[str, str], ...]]


@dataclass
class LoadGroup:
    """ORM loads of one attribute from one application function, by the query that loaded the
    parents (its figures are those of one query's rows: single-row loads of other queries in
    the same function neither add to its count nor move its call site)."""

    kind: str  # lazy_load / deferred_column
    attribute: str  # Order.customer
    direction: str | None
    by_query: dict[Any, QueryLoads] = field(default_factory=dict)  # query context (None: unknown) -> its loads
    # Origin.test_key (None: no test frame) -> [loads of rows a query read, the looping frame's
    # position -> loads, the queries that read them]
    by_test: dict[Any, list[Any]] = field(default_factory=dict)

    def busiest(self) -> QueryLoads:
        """The loads of the query whose rows were loaded one by one the most (the first such query on a tie)."""
        return max(self.by_query.values(), key=lambda loads: len(loads.parents))


#: Distinct (shape, origin) pairs a tracker tallies before grouping them (a bound on its memory:
#: a statement sent from a stack no origin is kept for makes a new pair every time)
TALLY_KEPT = 4096


def _sent_by_the_unit(unit: int, origin: Origin) -> bool:
    """True when a statement sent in the unit of work ``unit`` is the unit's own (the ORM's
    row by row writes of a flush, a batch, a chunked eager load): sent from the user frame that
    ran the flush. A statement a mapper event listener (user code the flush called) sends
    from its own frame is not: a SELECT per row there is the user's loop."""
    sender = flush_senders.get(unit, _NO_SENDER)
    if sender is _NO_SENDER or sender is None:
        return True  # not a flush (a batch, a chunked load), or a flush with no user frame
    return bool(origin.positions) and origin.positions[0] == sender


_NO_SENDER: Any = object()


class RepeatTracker:
    """Collects the evidence of one counter (see the module docstring).

    A statement costs a tally of its ``(shape key, origin)`` (origins are shared by the
    statements of one call site); the tally is grouped per shape, application function and
    test line (:attr:`statements`) by :meth:`fold`, when read or every :data:`TALLY_KEPT`
    pairs, with the figures a statement-by-statement grouping would give."""

    def __init__(self) -> None:
        self.statements: dict[tuple[str, Any, Any], StatementGroup] = {}
        self.loads: dict[tuple[str, str, Any, str | None], LoadGroup] = {}
        # (shape key, origin) -> [the first statement's text, statements(, a page-shaped text's paging
        # keys, first and last values)], in the order first seen
        self.tally: dict[tuple[str, Origin], list[Any]] = {}
        # "Class.attribute" -> the text of the first statement a load of it sent (for allow rules)
        self.load_sql: dict[str, str] = {}

    def statement(self, sql: str, shape: str, origin: Origin) -> None:
        """One statement that is not an ORM load (those come through :meth:`load`). Of a text
        shaped like a page, its parameters are kept too, the first and the last statement's
        (:data:`~pytest_migsafe.queries.dispatch.statement_params`)."""
        if origin.loop is None:
            return  # the test's own arrangement, or no user frame at all
        tally = self.tally
        seen = tally.get((shape, origin))
        if seen is None:
            if len(tally) >= TALLY_KEPT:
                self.fold()
            if is_pagination(sql):  # [text, statements, paging keys, first values, last values]
                keys = paging_keys(sql)
                values = paging_values(keys, dispatch.statement_params)
                tally[(shape, origin)] = [sql, 1, keys, values, values]
            else:
                tally[(shape, origin)] = [sql, 1]
        else:
            seen[1] += 1
            if len(seen) > 2:
                seen[4] = paging_values(seen[2], dispatch.statement_params)

    def fold(self) -> None:
        """Group the statements tallied so far into :attr:`statements` (and empty the tally).

        Run under :data:`~pytest_migsafe.queries.dispatch.recording`, as :meth:`statement` is
        (a fold while another thread increments an entry it has read would lose the increment)."""
        tally = self.tally
        if not tally:
            return
        groups = self.statements
        for (shape, origin), entry in tally.items():
            sql, n = entry[0], entry[1]
            loop = origin.loop
            if loop is None:  # (statement() tallies none such)
                continue
            # per application function and per line of the test that called in: separate calls
            # of one function from different lines of the test (ten requests through the same
            # middleware) are not one loop
            key = (shape, origin.function, origin.test_key)
            group = groups.get(key)
            if group is None:
                group = groups[key] = StatementGroup(shape, sql, inner=origin.inner)
            if len(entry) > 2:  # a page-shaped text: the paging values of its first and last
                if group.first_page is None:
                    group.first_page = entry[3]
                group.last_page = entry[4]
            flush = origin.unit_of_work
            if flush is not None and _sent_by_the_unit(flush, origin):
                if flush in group.flushes:
                    continue  # one flush sends one statement per row: its unit of work, not a loop
                group.flushes.add(flush)
                n = 1
            group.count += n
            group.lines[loop] = group.lines.get(loop, 0) + n
        tally.clear()

    def has_evidence(self) -> bool:
        """True once a statement or an ORM load could make a suspect."""
        return bool(self.tally or self.statements or self.loads)

    def load(self, load: tuple[str, str], parent: int, loaded: tuple[Any, str | None] | None,
             origin: Origin, direction: str | None) -> None:
        """One ORM load of ``load = (kind, "Class.attribute")`` for the row ``parent``."""
        where = origin.loop or origin.test
        if where is None:
            return  # no user frame: a framework's own load
        context, loaded_at = (loaded[0], loaded[1]) if loaded is not None else (None, None)
        # a lazy load in the test's own code is still a per-row load (unlike arranging data);
        # loads of one relation in one function but of two directions are two suspects, each
        # with its own fix (Django's a.books.count(), which prefetch_related("books") serves,
        # and a.books.filter(...), which only a Prefetch(queryset=...) does)
        key = (load[0], load[1], origin.function or where[1], direction)
        group = self.loads.get(key)
        if group is None:
            group = self.loads[key] = LoadGroup(load[0], load[1], direction)
        loads = group.by_query.get(context)
        if loads is None:
            via = loaded[2] if loaded is not None and len(loaded) > 2 else None
            loads = group.by_query[context] = QueryLoads(loaded_at, origin.inner, via=via)
        loads.count += 1
        loads.parents.add(parent)
        loads.lines[where] = loads.lines.get(where, 0) + 1
        if context is not None and type(context) is not tuple and origin.loop is not None:
            # a row a query read (not one a flush or a save() inserted: rows made one by one are
            # no one's loop), loaded from application code (a loop of the test's own, checking
            # its rows, is not the application's), for the rule of rows each read by a query of
            # their own
            test_key = origin.test_key
            by_test = group.by_test.get(test_key)
            if by_test is None:
                by_test = group.by_test[test_key] = [0, {}, set()]
            by_test[0] += 1
            by_test[1][where] = by_test[1].get(where, 0) + 1
            by_test[2].add(context)

    def _repeated(self, threshold: int) -> list[tuple[str, StatementGroup]]:
        """``(readable shape, group)`` of each shape repeated ``threshold`` times or more from
        one function (and test line): the groups of one readable shape are merged.

        The readable shape (the parser's, sqlglot imported at the first) is worked out only
        for the statements that could make a suspect: from a function that sent ``threshold``
        statements or more, whose texts alike but for their literal values
        (:func:`~pytest_migsafe.queries.normalize.token_shape`, no parser) number
        ``threshold`` or more. A function sending ten different statements costs no parse."""
        with recording:  # (another thread may be tallying, and folding: the counter may still be active)
            # fewer statements than the threshold in all (the tally's and the groups', an upper
            # bound of any group's count): no group can make a suspect, nothing is grouped
            total = 0
            for entry in self.tally.values():
                total += entry[1]
            for group in self.statements.values():
                total += group.count
            if total < threshold:
                return []
            self.fold()
            groups = [(key, StatementGroup(group.shape, group.sample_sql, group.count, dict(group.lines), group.inner,
                                           first_page=group.first_page, last_page=group.last_page))
                      for key, group in self.statements.items()]
        totals: dict[tuple[Any, Any], int] = {}
        for (_, function, test), group in groups:
            totals[(function, test)] = totals.get((function, test), 0) + group.count
        candidates = [(key, function, test, group) for (key, function, test), group in groups
                      if totals[(function, test)] >= threshold]
        if not candidates:
            return []
        from pytest_migsafe.queries.normalize import token_shape

        alike: dict[tuple[str, Any, Any], int] = {}
        tokens: list[str | None] = []
        for key, function, test, group in candidates:
            # a text over KEEP_TEXT_CHARS, kept cut: its key is its readable shape already (the
            # shape of its first 4 kB, ending " ...": it merges only with such texts)
            if type(key) is ReadableShape:
                tokens.append(None)
                continue
            token = token_shape(group.sample_sql)
            tokens.append(token)
            alike[(token, function, test)] = alike.get((token, function, test), 0) + group.count
        merged: dict[tuple[str, Any, Any], StatementGroup] = {}
        for (key, function, test, group), shown_alike in zip(candidates, tokens):
            if shown_alike is not None and alike[(shown_alike, function, test)] < threshold:
                continue
            shape = readable_shape(key, group.sample_sql)
            one = merged.get((shape, function, test))
            if one is None:
                merged[(shape, function, test)] = StatementGroup(shape, group.sample_sql, group.count,
                                                                 dict(group.lines), group.inner,
                                                                 first_page=group.first_page,
                                                                 last_page=group.last_page)
            else:
                one.count += group.count
                one.last_page = group.last_page
                for position, n in group.lines.items():
                    one.lines[position] = one.lines.get(position, 0) + n
        return [(shape, group) for (shape, _, _), group in merged.items() if group.count >= threshold]

    def suspects(self, threshold: int, allow: list[AllowRule]) -> list[NPlusOne]:
        """The N+1 suspects, most repeats first; those an allow rule covers are marked allowed."""
        if not self.loads and not self.statements and not self.tally:
            return []  # the common case: statements from the test's own code, no ORM load
        busiest = []
        one_by_one = []  # (group, loads, the loop's line): parents each fetched by a query of its own
        with recording:  # (another thread may be lazy-loading: the counter may still be active)
            for group in self.loads.values():
                loads = group.busiest()
                if len(loads.parents) >= 2:  # (a load of one row is no N+1: not copied)
                    busiest.append((group, loads.copy()))
                elif len(group.by_query) >= threshold and group.by_test:
                    count, lines, queries = max(group.by_test.values(), key=lambda entry: entry[0])
                    if count >= threshold and len(queries) >= threshold:
                        one_by_one.append((group, count, max(lines.items(), key=lambda kv: kv[1])[0]))
        found = []
        for group, count, position in one_by_one:
            # rows fetched by a query each (a get() per id), then each one's relation: one
            # application loop loading row by row, at the statement rule's threshold
            site = line_of(position)
            suspect = NPlusOne(shape=f"{group.attribute} ({group.kind.replace('_', ' ')})", call_site=site,
                               count=count, kind=group.kind, relationship=group.attribute, parents=count,
                               chain=[site], loaded_at=None,
                               fix=_one_query_fix(group.kind, group.attribute, group.direction))
            sql = self.load_sql.get(group.attribute)
            suspect.allowed = any(rule_matches(rule, suspect, sql) and count <= limit for rule, limit in allow)
            found.append(suspect)
        for group, loads in busiest:
            parents, loaded_at = len(loads.parents), loads.loaded_at
            positions = [max(loads.lines.items(), key=lambda kv: kv[1])[0], *loads.inner]
            positions = _from_the_parents_function(positions, loaded_at)
            site = line_of(positions[0])
            shape = f"{group.attribute} ({group.kind.replace('_', ' ')})"
            suspect = NPlusOne(shape=shape, call_site=site, count=loads.count, kind=group.kind,
                               relationship=group.attribute, parents=parents,
                               chain=_chain(site, positions[1:]), loaded_at=loaded_at,
                               fix=fix_for(group.kind, group.attribute, group.direction, loads.via,
                                           self.load_sql.get(group.attribute)))
            sql = self.load_sql.get(group.attribute)
            suspect.allowed = any(rule_matches(rule, suspect, sql) and suspect.parents <= limit
                                  for rule, limit in allow)
            found.append(suspect)
        for _, repeated in self._repeated(threshold):
            if is_pagination(repeated.shape) and pages_advance(repeated.first_page, repeated.last_page):
                continue  # pages of one read (its OFFSET or keyset bound moved on), not a per-row loop
            site = line_of(max(repeated.lines.items(), key=lambda kv: kv[1])[0])
            lines = sorted({line_of(position) for position in repeated.lines}, key=_by_line)
            suspect = NPlusOne(shape=repeated.shape, call_site=site, count=repeated.count,
                               chain=_chain(", ".join(lines) if len(lines) > 1 else site, repeated.inner),
                               fix=repeated_statement_fix(repeated.shape))
            suspect.allowed = any(rule_matches(rule, suspect, repeated.sample_sql) and repeated.count <= limit
                                  for rule, limit in allow)
            found.append(suspect)
        found.sort(key=lambda s: (-s.count, s.shape, s.call_site))
        return found


def _by_line(site: str) -> tuple[str, int, str]:
    """The order of ``path:line`` sites: by path, then by line number (``:5`` before ``:10``)."""
    path, _, line = site.rpartition(":")
    return (path, int(line), "") if line.isdigit() else (site, 0, site)


def _from_the_parents_function(positions: list[Position], loaded_at: str | None) -> list[Position]:
    """``positions`` (the outermost application frame, then the chain below it) from the frame
    of the function that ran the parents' query (``loaded_at``), when one is on the chain: the
    function that loaded the rows and goes over them (a view rendering them, a command looping
    over them) is the frame that loops, not a middleware or a dispatcher above it that every
    request passes through. The deepest such frame; ``positions`` as they are if none."""
    if loaded_at is None:
        return positions
    for index in range(len(positions) - 1, -1, -1):
        if holds_line(positions[index], loaded_at):
            return positions[index:]
    return positions


def _chain(first: str, inner: list[Position]) -> list[str]:
    """``first``, then the inner positions as ``path:line``, each line once in a row."""
    chain = [first]
    for position in inner:
        text = line_of(position)
        if text != chain[-1]:
            chain.append(text)
    return chain


def _loader(direction: str | None) -> str:
    return "joinedload" if direction == "MANYTOONE" else "selectinload"


def fix_for(kind: str, attribute: str, direction: str | None, via: EagerPath | None = None,
            sql: str | None = None) -> str:
    """The code that loads ``attribute`` with its parents, to paste into the query.

    Django's loads come with a ``DJANGO_*`` direction and get Django's fix
    (``select_related`` / ``prefetch_related`` / ``.only()``); SQLAlchemy's get
    ``joinedload`` (many-to-one), ``selectinload``, ``undefer`` (``undefer_group`` for the
    columns of one deferred group, ``direction`` ``"GROUP:<name>"``; ``selectin_polymorphic``
    for a joined-inheritance subclass's columns, ``"POLYMORPHIC:<Base>:<Sub>"``; ``with_polymorphic``
    over several levels, ``"POLYMORPHIC:<Base>:<Sub>, <Subsub>"``), chained after the eager
    loads that brought the parents into their query when ``via`` names them
    (``select(Book).options(joinedload(Book.author).selectinload(Author.books))``). ``sql``:
    the text a load sent (Django's per-row ``.aggregate()`` advice names its function).
    """
    if direction is not None and direction.startswith("DJANGO"):
        from pytest_migsafe.queries import django

        return django.fix_for(kind, attribute, direction, via, sql)
    cls = attribute.split(".", 1)[0]
    root, chain = cls, ""
    if via is not None and via[1]:
        root = via[0]
        chain = ".".join(f"{_loader(step)}({name})" for name, step in via[1]) + "."
    if kind == "deferred_column":
        columns = attribute.partition(".")[2]
        first = columns.split(",")[0].strip()
        if first.startswith("<"):
            return f"select({cls}) without expiring the rows first (or session.refresh() once per batch)"
        if direction is not None and direction.startswith("GROUP:"):  # one deferred_group: all of it
            return f"select({root}).options({chain}undefer_group({direction[6:]!r}))"
        if direction is not None and direction.startswith("POLYMORPHIC:"):  # a subclass's own tables
            base, _, levels = direction[12:].partition(":")
            if "," in levels:  # several levels: one query joining their tables (SQLAlchemy 2.0's
                # selectin_polymorphic leaves a middle level's columns to load row by row)
                return f"select(with_polymorphic({base}, [{levels}]))"
            return f"select({base}).options(selectin_polymorphic({base}, [{levels or cls}]))"
        return f"select({root}).options({chain}undefer({cls}.{first}))"
    return f"select({root}).options({chain}{_loader(direction)}({attribute}))"


def _one_query_fix(kind: str, attribute: str, direction: str | None) -> str:
    """The fix of a relation (or column) loaded row by row for rows that each came from a query
    of their own: one query for all the rows, loading it with them."""
    cls = attribute.split(".", 1)[0]
    fix = fix_for(kind, attribute, direction)
    if fix.startswith(f"select({cls}).options(") and fix.endswith(")"):  # SQLAlchemy's loader option
        from pytest_migsafe.queries.orm import primary_keys

        option = fix[len(f"select({cls}).options("):-1]
        keys = primary_keys.get(cls, ("id",))
        key = f"{cls}.{keys[0]}" if len(keys) == 1 else f"tuple_({', '.join(f'{cls}.{k}' for k in keys)})"
        return f"select({cls}).where({key}.in_(...)).options({option}): one query for the rows, not one each"
    if fix.startswith(f"{cls}.objects."):  # Django's
        return f"{cls}.objects.filter(pk__in=...).{fix[len(cls) + 9:]}: one query for the rows, not one each"
    return f"{fix} (the rows each came from a query of their own: fetch them in one query)"


def rule_matches(rule: re.Pattern[str] | str, suspect: NPlusOne, sql: str | None) -> bool:
    """An allow rule matches a suspect by its relationship name, its shape or its SQL as sent.

    A string matches the relationship (``"Order.customer"``), or the shape or SQL text
    exactly (keywords and spacing aside); a regex is searched in the shape, the SQL text and
    the relationship name, case-insensitively. ``sql``: the statement's text as sent (for an
    ORM load, the first load's of that relationship), None when unknown.
    """
    if isinstance(rule, str):
        if rule == suspect.relationship:
            return True
        folded = " ".join(rule.split()).casefold()
        if folded in (" ".join(suspect.shape.split()).casefold(), " ".join((sql or "").split()).casefold()):
            return True
        from pytest_migsafe.queries.normalize import normalize

        shape = normalize(rule)
        return shape == suspect.shape or (sql is not None and shape == normalize(sql))
    pattern = rule if rule.flags & re.I else re.compile(rule.pattern, rule.flags | re.I)
    return any(pattern.search(text) for text in (suspect.shape, sql or "", suspect.relationship or ""))


def describe(suspects: list[NPlusOne], threshold: int, width: int = 160,
             allow: Sequence[AllowRule] = ()) -> str:
    """The N+1 message: one block per suspect, what repeated, where, the fix, an allow line.

    ``threshold``: the repeats that make a statement-shape suspect (named in the heading);
    ``allow``: the test's ``allow_n_plus_one`` rules: a suspect one of them matches but does not
    cover (more repeats, or parent rows, than its ceiling) says so.
    """
    from pytest_migsafe.text import shorten

    blocks = []
    for s in suspects:
        where = s.chain[0] if s.chain else s.call_site
        below = f" via {' via '.join(s.chain[1:])}" if len(s.chain) > 1 else ""
        if s.relationship is not None:
            what = "lazy-loaded" if s.kind == "lazy_load" else "loaded column by column"
            parents = f"for {s.parents} {s.relationship.split('.', 1)[0]} rows"
            loaded = f" loaded at {s.loaded_at}" if s.loaded_at else ""
            lines = [f"N+1 suspected: {s.relationship} {what} {parents}{loaded} ({s.count} statements)",
                     f"  at {where}{below}"]
            if s.fix:
                lines.append(f"  fix: {s.fix}")
            if s.parents <= 3:
                lines.append("  (little data in this test: assert_constant_queries proves how the count grows)")
            lines.append(f'  or accept it: @pytest.mark.allow_n_plus_one("{s.relationship}", {s.parents})')
            lines += _over_ceiling(s, allow, s.parents, "parent rows")
        else:
            lines = [f"N+1 suspected: a statement repeated {s.count} times from one function (threshold {threshold})",
                     f"  {shorten(s.shape, width)}",
                     f"  at {where}{below}",
                     f"  fix: {s.fix or repeated_statement_fix(s.shape)}",
                     f"  or accept it: @pytest.mark.allow_n_plus_one(re.compile({_regex_for(s.shape)!r}), {s.count})"]
            lines += _over_ceiling(s, allow, s.count, "repeats")
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def repeated_statement_fix(shape: str) -> str:
    """The fix to suggest for ``shape`` (a readable shape) repeated in a loop, by its kind: a read
    is loaded in one statement, a row-by-row write batched, a check that reads no table (Django's
    constraint validation in ``full_clean``) run once."""
    from pytest_migsafe.queries.normalize import statement_kind

    kind = statement_kind(shape)
    if kind == "insert":
        return ("insert the rows in one statement: executemany, insert(Model).values([...]) or "
                "session.execute(insert(Model), rows) (SQLAlchemy); Model.objects.bulk_create(objs) (Django)")
    if kind == "update":
        return ("update the rows in one statement: update(Model).where(Model.id.in_(ids)) (SQLAlchemy); "
                "QuerySet.update(...) or Model.objects.bulk_update(objs, fields) (Django)")
    if kind == "delete":
        return ("delete the rows in one statement: delete(Model).where(Model.id.in_(ids)) (SQLAlchemy); "
                "QuerySet.delete() (Django)")
    if kind == "select" and not re.search(r"\bFROM\b", shape, re.IGNORECASE):
        return ("the same check runs once per row (it reads no table: Django's full_clean() validating "
                "constraints does this): run it once, or skip it for rows already known valid "
                "(full_clean(exclude=[...]), validate_constraints=False)")
    return "load the rows in one statement (a JOIN, or WHERE ... IN (...)) outside the loop"


def _over_ceiling(suspect: NPlusOne, allow: Sequence[AllowRule], measured: int, unit: str) -> list[str]:
    """The line saying which allow rule matched ``suspect`` but is exceeded (none if none)."""
    if suspect.allowed:
        return []
    for rule, limit in allow:
        if rule_matches(rule, suspect, None) and measured > limit:
            shown = f"re.compile({rule.pattern!r})" if hasattr(rule, "pattern") else repr(rule)
            return [f"  over its allowance: @pytest.mark.allow_n_plus_one({shown}, {limit}) allows up to "
                    f"{limit} {unit}, this test has {measured}"]
    return []


def _regex_for(shape: str) -> str:
    """A regex that matches ``shape`` (and the SQL it came from), to paste into an allow rule."""
    words = re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", shape)
    picked = [w for w in words if w.upper() not in ("SELECT", "FROM", "WHERE", "AND", "OR", "AS", "ON")][:4]
    return r".*".join(re.escape(w) for w in picked) or re.escape(shape[:40])
