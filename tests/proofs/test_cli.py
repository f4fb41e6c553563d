"""`python -m tljax proofs` entry point."""

from tljax.proofs._cli import main


def test_runs_one_claim_and_prints_the_table(capsys):
    assert main(["--claim", "softmax-rows-sum-to-one"]) == 0
    out = capsys.readouterr().out
    assert "softmax-rows-sum-to-one" in out and "1/1 claims hold" in out


def test_list_and_unknown(capsys):
    assert main(["--list"]) == 0
    assert "flash-attention-equals-softmax-attention (exact-enumerated)" in capsys.readouterr().out
    assert main(["--claim", "no-such-claim"]) == 2
