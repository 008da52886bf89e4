"""The report's margin table: every split, signed, including small and negative margins."""

from __future__ import annotations

from nesyloop.report import margin_table, render_report


def test_margins_over_std_cot_are_signed_per_split():
    m = {"std-cot": {"test": {"strict": 0.62, "flexible": 0.62, "n": 500},
                     "test-rare": {"strict": 0.39, "flexible": 0.40, "n": 300}},
         "nesycd": {"test": {"strict": 0.61, "flexible": 0.61, "n": 500},
                    "test-rare": {"strict": 0.50, "flexible": 0.50, "n": 300}}}
    table = margin_table(m, ["test", "test-rare", "test-deep"], "std-cot", ["nesycd", "kard"])
    assert table.splitlines()[2] == "| nesycd | -1.0 | +11.0 | – |"
    assert "kard" not in table  # absent methods are left out
    report = render_report("r", m, ["test", "test-rare"], {}, [])
    assert "Margins over std-cot" in report and "| nesycd | -1.0 | +11.0 |" in report
    assert margin_table({"nesycd": m["nesycd"]}, ["test"], "std-cot", ["nesycd"]) is None
