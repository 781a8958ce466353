"""Generate the cell-key p-table stored in the repository: `.venv/bin/python scripts/make_ptable.py`.

    scripts/make_ptable.py [--D 3] [--V 2] [--threshold 10] [--check]

Writes outputs/data/ptable_D{D}_V{V}_T{threshold}.csv by the maximum-entropy construction of the
`ptable` R package, documented in outputs/ptable.py (columns: original value i, released value j,
perturbation v, maximum-entropy probability p and its cumulative interval [p_int_lb, p_int_ub) as
the package writes them, then the number of the 256 cell keys given to v and their range
[ckey_lb, ckey_ub]). `--check` only verifies that the stored file is what the method produces.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from outputs import ptable  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--D", type=int, default=3)
    parser.add_argument("--V", type=float, default=2)
    parser.add_argument("--threshold", type=int, default=10)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    table = ptable.build(args.D, args.V, args.threshold)
    path = ptable.DATA / ptable.filename(args.D, args.V, args.threshold)
    text = table.to_csv()
    if args.check:
        same = path.exists() and path.read_text() == text
        print(f"{path}: {'matches' if same else 'DIFFERS from'} the construction")
        return 0 if same else 1
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    print(f"wrote {path} (rows 0 … {table.max_row}, {len(text.splitlines()) - 1} entries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
