"""Names that researchers write in SQL: dataset (table) names and column names.

A name is a lowercase ASCII identifier (``^[a-z][a-z0-9_]{0,62}$``) that is not a keyword of
DuckDB (any category but "unreserved": those cannot stand as a bare table or column name
everywhere) nor a reserved word of PostgreSQL (the flavour researchers write), and that sqlglot
parses back as that same table. Tables starting ``tre_`` are the environment's own
(``tre_optouts`` …); ``person_id`` is the pseudonym column every dataset has.
"""

import functools
import re

import sqlglot
from sqlglot import exp

from .engine import connect

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# Identifiers hold no data: a run of ten digits looks like an NHS number and is refused.
_TEN_DIGITS = re.compile(r"[0-9]{10}")

PERSON_ID = "person_id"
RESERVED_PREFIX = "tre_"

# PostgreSQL's reserved key words ("reserved" and "reserved (can be function or type)"), SQL:2016.
POSTGRES_RESERVED = frozenset("""
all analyse analyze and any array as asc asymmetric authorization binary both case cast check collate collation
column concurrently constraint create cross current_catalog current_date current_role current_schema current_time
current_timestamp current_user default deferrable desc distinct do else end except false fetch for foreign freeze
from full grant group having ilike in initially inner intersect into is isnull join lateral leading left like limit
localtime localtimestamp natural not notnull null offset on only or order outer overlaps placing primary references
returning right select session_user similar some symmetric system_user table tablesample then to trailing true union
unique user using variadic verbose when where window with
""".split())


@functools.cache
def duckdb_keywords() -> frozenset[str]:
    """DuckDB keywords that are not "unreserved" (``SELECT keyword_name FROM duckdb_keywords()``)."""
    con = connect(memory_limit="64MB", threads=1)
    try:
        rows = con.execute("SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category <> 'unreserved'").fetchall()
    finally:
        con.close()
    return frozenset(r[0].lower() for r in rows)


def is_keyword(name: str) -> bool:
    return name.lower() in POSTGRES_RESERVED or name.lower() in duckdb_keywords()


def _parses_as_table(name: str) -> bool:
    try:
        tree = sqlglot.parse_one(f"SELECT count(*) FROM {name} WHERE {name}.x = 1", read="postgres")
    except Exception:
        return False
    tables = [t.name for t in tree.find_all(exp.Table)]
    return tables == [name]


def identifier_problems(name, *, what: str) -> list[str]:
    """Why ``name`` cannot be an identifier (empty list when it can)."""
    if not isinstance(name, str) or not name:
        return [f"a {what} name is required"]
    if not IDENTIFIER.fullmatch(name):
        return [f"a {what} name must be a lowercase ASCII identifier: a letter, then letters, digits or "
                f"underscores, at most 63 characters (^[a-z][a-z0-9_]{{0,62}}$)"]
    if _TEN_DIGITS.search(name):
        return [f"a {what} name must not contain ten digits in a row (it would look like an NHS number)"]
    if is_keyword(name):
        return [f"'{name}' is an SQL reserved word and cannot be a {what} name"]
    return []


def table_name_problems(name) -> list[str]:
    problems = identifier_problems(name, what="dataset")
    if problems:
        return problems
    if name.startswith(RESERVED_PREFIX):
        return [f"dataset names starting '{RESERVED_PREFIX}' are reserved for the environment"]
    if name == PERSON_ID:
        return [f"'{PERSON_ID}' is the pseudonym column and cannot be a dataset name"]
    if not _parses_as_table(name):
        return [f"'{name}' cannot be used as a table name in SQL"]
    return []


def column_name_problems(name) -> list[str]:
    problems = identifier_problems(name, what="column")
    if problems:
        return problems
    if name == PERSON_ID:
        return [f"'{PERSON_ID}' is added by the environment (the pseudonym); a dataset cannot declare it"]
    return []
