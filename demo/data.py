"""Synthetic, realistic-looking patient records for the demo and the tests (generated locally).

Nothing here is real: NHS numbers are valid by their check digit only, drawn from a seed.
"""

import csv
import io
import random
from dataclasses import dataclass
from datetime import date, timedelta

from environment.pseudonym import make_nhs_number

REGIONS = ["North East", "North West", "Yorkshire", "East Midlands", "West Midlands", "East of England",
           "London", "South East", "South West"]
AGE_BANDS = ["0-17", "18-39", "40-64", "65-79", "80+"]
SEXES = ["F", "M"]
# ICD-10 codes with their (rough) relative frequencies in a GP-style extract.
CODES = [("E11", 8), ("I10", 12), ("J45", 6), ("F32", 7), ("M54", 9), ("I25", 3), ("C50", 1), ("N18", 2),
         ("J44", 3), ("G43", 2)]

# The dataset's declaration: a data dictionary (docs/environment.md). Every column says what it is
# and, where it can, which values it takes; ``value``'s bounds are left to be derived safely from
# the first load (its 1st and 99th percentiles, rounded outward to two significant figures).
COLUMNS = [
    {"name": "nhs_number", "type": "text", "role": "identifier",
     "description": "direct identifier: replaced by person_id at ingestion, never stored"},
    {"name": "patient_name", "type": "text", "drop": True, "description": "never enters the store"},
    {"name": "region", "type": "text", "role": "category", "values": REGIONS,
     "description": "NHS England region of the practice"},
    {"name": "sex", "type": "text", "role": "category", "values": SEXES, "description": "sex as registered (F, M)"},
    {"name": "age", "type": "integer", "role": "measure", "min": 0, "max": 100,
     "description": "age in whole years at the event"},
    {"name": "age_band", "type": "text", "role": "category", "values": AGE_BANDS, "description": "age band at the event"},
    {"name": "code", "type": "text", "role": "category", "values": [c for c, _ in CODES],
     "description": "ICD-10 diagnosis code (three characters)"},
    {"name": "event_date", "type": "date", "role": "date", "granularity": "month", "min": "2020-01-01",
     "max": "2024-12-31", "description": "date of the event; queries may group by month, quarter or year"},
    {"name": "value", "type": "float", "role": "measure",
     "description": "cost of care in GBP (bounds derived safely at the first load)"},
    {"name": "smoker", "type": "boolean", "role": "category", "description": "recorded as a smoker at the event"},
]


@dataclass(frozen=True)
class Record:
    nhs_number: str
    patient_name: str
    region: str
    sex: str
    age: int
    age_band: str
    code: str
    event_date: date
    value: float
    smoker: bool


def _band(age: int) -> str:
    return "0-17" if age < 18 else "18-39" if age < 40 else "40-64" if age < 65 else "65-79" if age < 80 else "80+"


def records(rows: int, persons: int | None = None, seed: int = 7, first_person: int = 0):
    """Yield ``rows`` records over ``persons`` people (default rows // 10), deterministic for a seed."""
    rng = random.Random(seed)
    persons = persons or max(1, rows // 10)
    codes, weights = zip(*CODES, strict=False)
    people = []
    for p in range(persons):
        age = rng.randint(0, 95)
        people.append((make_nhs_number(first_person + p), rng.choice(REGIONS), rng.choice(SEXES), age, rng.random() < 0.18))
    start = date(2020, 1, 1)
    for i in range(rows):
        nhs, region, sex, age, smoker = people[i % persons] if i < persons else people[rng.randrange(persons)]
        code = rng.choices(codes, weights)[0]
        value = round(rng.lognormvariate(5, 0.6) * (1.5 if code in ("C50", "N18") else 1.0), 2)
        yield Record(nhs, f"Patient {i}", region, sex, age, _band(age), code,
                     start + timedelta(days=rng.randrange(365 * 5)), value, smoker)


def to_csv(recs) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([c["name"] for c in COLUMNS])
    for r in recs:
        writer.writerow([r.nhs_number, r.patient_name, r.region, r.sex, r.age, r.age_band, r.code,
                         r.event_date.isoformat(), r.value, "true" if r.smoker else "false"])
    return out.getvalue().encode()


def write_csv(path, rows: int, persons: int | None = None, seed: int = 7) -> None:
    """Stream a large CSV to ``path`` without holding it in memory."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([c["name"] for c in COLUMNS])
        for r in records(rows, persons, seed):
            writer.writerow([r.nhs_number, r.patient_name, r.region, r.sex, r.age, r.age_band, r.code,
                             r.event_date.isoformat(), r.value, "true" if r.smoker else "false"])
