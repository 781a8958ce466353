"""The version-2 query language: declared variables, a fixed grid, per-person contributions (DESIGN.md §5).

A pure module (no Django, no I/O). ``validate`` parses a researcher's SQL (PostgreSQL flavour, with
sqlglot) and checks it against the data dictionaries (``environment.dictionary``); it accepts exactly
one ``SELECT`` of keys and aggregates::

    SELECT <key>, …, <aggregate>, …
    FROM <dataset> [AS a] [ [LEFT] JOIN <dataset> [AS b] ON a.person_id = b.person_id | USING (person_id) ]…
    [WHERE <predicate>]
    [GROUP BY <key>, …]

and answers a ``Plan``: the datasets, the keys with their domains (known before the query runs), the
statistics with the per-row bounds of their measure, the filter and the grid. Anything else raises
``LanguageError`` with one ``Problem`` per construct found (rule, message, hint, line, column). The
language is an allow-list over sqlglot's syntax tree: a construct this module does not name is refused,
so a new sqlglot feature cannot widen it by accident.

``contributions_sql`` turns a plan into ONE statement for the engine (DuckDB or Spark SQL, emitted from
one sqlglot tree) whose rows are the populated cells of the grid with everything disclosure control
needs: contributor count, cell keys, row counts, sums, sums of squares and the largest per-person
contributions (``outputs/`` turns them into released, perturbed values).

Decisions (documented in docs/query-language.md):

* **Reading a column** ("clean read"): a measure is clamped to its bounds (``CASE WHEN x < lo THEN lo
  WHEN x > hi THEN hi ELSE x END`` — not ``least/greatest``, which skip NULL); a date outside its
  declared range reads as NULL; a category is read as stored (values outside the domain cannot occur:
  ingestion recodes them to ``other``). The same clean read is used in keys, filters and measures.
* **Keys that are NULL form no cell**: rows whose key is NULL (a NULL category, a NULL or out-of-range
  date, a row matching no band without ``ELSE``) are excluded from the contributions. An integer key is
  clamped like every measure, so it always lies in its domain.
* **Arithmetic** of a measure expression is exact in BIGINT when every leaf is an integer, there is no
  division and every intermediate value lies within ±(2³¹−1) (so a square fits in BIGINT); otherwise every
  leaf is read as DOUBLE. ``/`` is therefore always true division. Nothing can overflow or divide by zero.
* **Opt-outs**: one anti-join (``NOT EXISTS``) on the first dataset's ``person_id``: every joined row
  belongs to the person of a row of the first dataset (joins are inner or left, on ``person_id`` only).
* **Dates of month/year granularity** are compared only with ``>=`` and ``<`` at the first day of a month
  (year): ``=``, ``>``, ``<=``, ``IN`` and ``BETWEEN`` at a month start would tell the 1st from other days.
* **date_diff** has DuckDB's meaning (unit boundaries crossed) and is emitted so that both engines agree:
  ``DATEDIFF`` for days, ``EXTRACT`` arithmetic for months and years (week/quarter are refused).
* **Key labels**: a category's declared value (str, int or bool), ``datetime.date`` for ``date_trunc``,
  ``int`` for ``extract`` and integer keys, ``str`` for bands; the names are lower-case.

Every rule name is a key of ``HINTS`` (what to write instead).
"""

from .emit import *  # noqa: F403
from .model import *  # noqa: F403
from .validator import validate  # noqa: F401
