"""suites/matrix.toml covers the registry: every claim row of every implemented (flag) enhancement has a
variant that the registry attributes to it and a measurement kind, run on that variant, whose records
stand for the claim's metric; under --quick too, except the rows left out on purpose (listed here with
the reason). The A/A control is the baseline again. A static check: no model runs here."""

from __future__ import annotations

from vemi_eval import registry
from vemi_eval.measurements import claim_rules, load_all
from vemi_eval.suites import load_suite

# rows --quick leaves out, and why (the report says so on the row as well); none since compile is in
QUICK_LEFT_OUT: dict[tuple[str, str], str] = {}


def _flags(variant) -> dict[str, str | None]:
    pairs = (f.partition("=") for f in variant.flags)
    return {n: (v if eq else None) for n, eq, v in pairs}


def _coverage(quick: bool) -> dict[tuple[str, int], list[str]]:
    suite = load_suite("matrix", known_kinds=load_all())
    rules = claim_rules()
    base = _flags(suite.baseline)
    out = {}
    for e in registry.ENHANCEMENTS:
        if not e.flags or registry.status(e)["status"] != "implemented":
            continue
        for i, c in enumerate(e.claims):
            kinds = {kind for _p, _w, kind in rules.get(c.metric, [])}
            covered = []
            for kind in set(suite.kinds) & kinds:
                for v in suite.variants_for(kind, quick):
                    if v.aa or v is suite.baseline:
                        continue
                    f = _flags(v)
                    if registry.attributed(e, c, f, base) or registry.runs_reference(e, c, f, base):
                        covered.append(v.name)
            out[(e.id, i)] = covered
    return out


def test_every_implemented_claim_row_is_measured_by_the_matrix_suite() -> None:
    missing = [key for key, covered in _coverage(quick=False).items() if not covered]
    assert not missing, missing


def test_quick_measures_every_row_the_full_run_does() -> None:
    assert _coverage(quick=True) == _coverage(quick=False)


def test_quick_leaves_out_only_what_it_says() -> None:
    full, quick = _coverage(quick=False), _coverage(quick=True)
    for key, covered in quick.items():
        dropped = set(full[key]) - set(covered)
        assert all((key[0], name) in QUICK_LEFT_OUT for name in dropped), (key, dropped)
        assert covered or all((key[0], n) in QUICK_LEFT_OUT for n in full[key]), key


def test_the_aa_control_is_the_baseline_again_and_measured_wherever_the_baseline_is() -> None:
    suite = load_suite("matrix", known_kinds=load_all())
    aa = [v for v in suite.variants if v.aa]
    assert len(aa) == 1 and aa[0].flags == suite.baseline.flags and not aa[0].own_model
    assert suite.variants[-1] is aa[0]  # measured last: its ratio bounds the drift over the whole run
    for kind in suite.kinds:
        for quick in (False, True):
            names = [v.name for v in suite.variants_for(kind, quick)]
            assert aa[0].name in names and suite.baseline.name in names, (kind, quick)


def test_the_demo_times_int4_side_by_side_with_an_aa_control() -> None:
    """The demo's int4 LM-step verdict is taken as the matrix's is (interleaved with a fresh baseline,
    beside an A/A interval), so a new user's first verdict agrees with the committed matrix."""
    suite = load_suite("demo", known_kinds=load_all())
    aa = [v for v in suite.variants if v.aa]
    assert len(aa) == 1 and aa[0].flags == suite.baseline.flags and suite.variants[-1] is aa[0]
    for quick in (False, True):
        names = [v.name for v in suite.variants_for("latency", quick)]
        assert {"baseline", "int4", aa[0].name} <= set(names)
        assert suite.params_for("latency", quick)["interleave"] > 0
