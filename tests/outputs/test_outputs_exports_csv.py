"""CSV cells that a spreadsheet would execute are neutralised; numbers are untouched."""

from outputs.exports import _cell


def test_formula_like_text_is_quoted_and_numbers_are_not():
    assert [_cell(v) for v in ["=1+1", "+A1", "-2+3", "@SUM(A1)", "\tx", "North East", -5, -2.5, 0, None]] == \
        ["'=1+1", "'+A1", "'-2+3", "'@SUM(A1)", "'\tx", "North East", -5, -2.5, 0, ""]
