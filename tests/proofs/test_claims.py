"""The claims registry refuses claims whose statement or name promises more than the check."""

import re

import pytest

from tljax.proofs import _claims
from tljax.proofs._claims import Claim, Evidence, OverclaimError, claim, registry, run_claim


@pytest.fixture
def empty_registry(monkeypatch):
    monkeypatch.setattr(_claims, "_REGISTRY", {})


def _sampled():
    # A finite sample: relu(x) >= 0 at 3 points. True there, but not a proof for every x.
    return Evidence(all(max(x, 0) >= 0 for x in (-1, 0, 2)), "3 points", scope="family")


def test_overclaiming_toy_claim_is_refused_at_registration(empty_registry):
    with pytest.raises(OverclaimError, match=re.escape("cannot be 'general'")):
        claim(
            "relu-nonnegative", "relu(x) >= 0 for every real x", "exact-enumerated", scope="general"
        )(_sampled)
    with pytest.raises(OverclaimError, match="does not declare the family"):
        claim(
            "relu-nonnegative",
            "relu(x) >= 0 for every real x",
            "exact-enumerated",
            family="x in {-1, 0, 2}",
        )(_sampled)
    with pytest.raises(OverclaimError, match="general word 'sound'"):
        claim(
            "relu-is-sound",
            "relu(x) >= 0 at the 3 listed points",
            "exact-enumerated",
            family="x in {-1, 0, 2}",
        )(_sampled)
    with pytest.raises(OverclaimError, match="needs family="):
        claim("relu-nonnegative", "relu(x) >= 0 at the 3 listed points", "exact-enumerated")(
            _sampled
        )
    assert _claims._REGISTRY == {}


def test_declared_family_claim_is_accepted_and_shown(empty_registry):
    c = claim(
        "relu-nonnegative-on-listed-points",
        "relu(x) >= 0 at the 3 listed points x",
        "exact-enumerated",
        family="x in {-1, 0, 2}",
    )(_sampled)
    assert c.scope == "family" and _claims._REGISTRY[c.name] is c
    r = run_claim(c)
    assert r.holds and "(family)" in _claims.format_table([r])


def test_general_claim_with_finite_evidence_is_refused_when_run():
    # Built without `register` (as a test or a user might): the run refuses it.
    c = Claim("relu-nonnegative", "relu(x) >= 0 for every real x", "symbolic", _sampled)
    assert c.scope == "general"  # inferred from the method
    r = run_claim(c)
    assert not r.holds and r.status == "error" and r.error.startswith("OverclaimError")
    assert "finite family only" in r.error
    # The same check declared honestly holds.
    honest = Claim(
        "relu-nonnegative",
        "relu(x) >= 0 at 3 listed points",
        "symbolic",
        _sampled,
        scope="family",
        family="x in {-1, 0, 2}",
    )
    assert run_claim(honest).holds


def test_every_registered_claim_states_its_scope():
    for name, c in registry().items():
        assert _claims.scope_problems(c) == [], name
        if c.scope == "family":
            assert c.family.strip() and _claims.declares_family(c.statement), name
        else:
            assert c.method not in ("exact-enumerated", "numeric"), name


def test_importing_tljax_proofs_alone_registers_every_topic():
    # A fresh interpreter that imports only tljax.proofs: the claim modules must be found by
    # ordinary imports, with no list of module-name strings to load later.
    import subprocess
    import sys

    code = (
        "import sys, tljax.proofs as p\n"
        "tags = {t for c in p.registry().values() for t in c.tags}\n"
        "print(sorted(tags & {'rl', 'diffusion', 'ssl', 'softmax'}))\n"
        "import importlib.util as u\n"
        "old = ['tljax.rl._claims', 'tljax.diffusion._claims', 'tljax.objectives._claims']\n"
        "print([m for m in old if m in sys.modules or u.find_spec(m) is not None])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    ).stdout.splitlines()
    assert out[0] == "['diffusion', 'rl', 'softmax', 'ssl']", out
    assert out[1] == "[]", f"claim modules outside tljax.proofs still exist: {out[1]}"
