"""The flag parser: unknown flags, bad values, duplicates and conflicts stop a run before any work."""

import pytest

from reference_model.enhancements import FlagError, parse_flags


def test_empty_flags_parse_to_nothing() -> None:
    assert parse_flags(None) == []
    assert parse_flags("") == []


def test_unknown_flag_is_one_clear_line() -> None:
    with pytest.raises(FlagError) as err:
        parse_flags("no-such-flag")
    msg = str(err.value)
    assert "unknown flag 'no-such-flag'" in msg and "\n" not in msg


def test_a_flag_value_that_needs_cuda_is_refused_on_cpu_at_parse_time() -> None:
    with pytest.raises(FlagError, match="needs a CUDA device"):
        parse_flags("attn=flash", device="cpu")
    assert parse_flags("attn=sdpa", device="cpu")[0].value == "sdpa"
