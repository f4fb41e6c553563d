"""`python -m tljax proofs`: one line per claim, streamed as each finishes, fitting a terminal."""

import io

import pytest

from tljax.proofs import _cli
from tljax.proofs._claims import Claim, Evidence
from tljax.proofs._cli import WIDTH, main

LONG_NAME = "toy: " + "a claim whose name is much longer than any terminal line " * 3
LONG_DETAIL = "checked " + "one more case, " * 40


class _Stream(io.StringIO):
    """Records what had been flushed, so a test can see what a user saw at a given moment."""

    def __init__(self):
        super().__init__()
        self.flushed = ""

    def flush(self):
        super().flush()
        self.flushed = self.getvalue()


@pytest.fixture
def toy_registry(monkeypatch):
    """Three toy claims; the second records what had been flushed when it started."""
    seen_when_second_ran = []
    stream = _Stream()

    def second():
        seen_when_second_ran.append(stream.flushed)
        return Evidence(True, LONG_DETAIL)

    claims = [
        Claim(
            "toy: first",
            "1 + 1 == 2 over the integers",
            "exact-all",
            lambda: Evidence(True, "1 case"),
        ),
        Claim(LONG_NAME, "it holds over the integers", "exact-all", second),
        Claim(
            "toy: false",
            "2 + 2 == 5 over the integers",
            "exact-all",
            lambda: Evidence(False, LONG_DETAIL, counterexample={"x": 2}),
        ),
    ]
    monkeypatch.setattr(_cli, "registry", lambda: {c.name: c for c in claims})
    return stream, seen_when_second_ran


def test_runs_one_claim_and_prints_a_short_line(capsys):
    assert main(["--claim", "softmax-rows-sum-to-one"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("holds") and "softmax-rows-sum-to-one" in line for line in lines)
    assert lines[-1].startswith("1/1 claims hold")
    assert max(map(len, lines)) <= WIDTH


def test_each_line_is_flushed_before_the_next_claim_runs(toy_registry):
    stream, seen_when_second_ran = toy_registry
    assert main([], out=stream) == 1  # one toy claim is false
    (seen,) = seen_when_second_ran
    assert "toy: first" in seen and LONG_NAME[:20] not in seen
    assert stream.flushed == stream.getvalue()  # everything shown at the end


def test_lines_fit_a_terminal_and_failures_say_why(toy_registry):
    stream, _ = toy_registry
    main([], out=stream)
    lines = stream.getvalue().splitlines()
    assert max(map(len, lines)) <= WIDTH, max(lines, key=len)
    assert any(line.startswith("FALSE") and "toy: false" in line for line in lines)
    i = next(k for k, line in enumerate(lines) if line.startswith("FALSE"))
    assert lines[i + 1].startswith("    checked one more case") and lines[i + 1].endswith("...")
    assert LONG_DETAIL[:40] not in "\n".join(lines[:i])  # holding claims: no detail by default
    assert lines[-1].startswith("2/3 claims hold") and "not holding: 1" in lines[-1]


def test_details_flag_prints_full_names_and_evidence_wrapped(toy_registry):
    stream, _ = toy_registry
    main(["--details"], out=stream)
    text = stream.getvalue()
    assert max(map(len, text.splitlines())) <= WIDTH
    joined = " ".join(text.split())
    assert " ".join(LONG_NAME.split()) in joined
    assert " ".join(LONG_DETAIL.split()) in joined and "counterexample: {'x': 2}" in joined


def test_list_fits_and_unknown_claims_are_refused(capsys):
    assert main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(
        line.startswith("flash-attention-equals-softmax-attention (exact-enumerated)")
        for line in lines
    )
    assert len(lines) >= 40 and max(map(len, lines)) <= WIDTH
    assert main(["--claim", "no-such-claim"]) == 2
