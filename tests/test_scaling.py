"""Presets that scale with ε (issue 33, part 1): MEF's α = ε/10, RAP's α = ε/8, ε_n = ε, α_n = ε_n/8.
At ε = 16/255 they are the numbers the presets held before, bit for bit, and the cells keep their
ids; at any other ε they keep the published ratios, in the API and on the command line alike."""

import pytest
import torch


from flatbench import create_attack
from flatbench.core.registry import ConfigError
from flatbench.attacks.scaling import parse_rule, resolve_length, rule_text
from helpers import command

# `flatbench plan -m method=rap,mef,mef_dim_tim eps=16` on main 1e082fa, before the presets were rules.
IDS_AT_16 = {"method=rap": "1fa357a1c384", "method=mef": "d3a3eaf1894d", "method=mef_dim_tim": "0fba6c1de39f"}


def test_rules_parse_and_resolve_exactly():
    assert parse_rule(2.0) is None and resolve_length(2.0, 16, "alpha") == 2.0
    assert resolve_length("eps", 16, "x") == 16 and resolve_length("eps/10", 16, "x") == 1.6
    assert resolve_length("eps*2", 16, "x") == 32 and resolve_length("2*eps", 16, "x") == 32
    assert [rule_text(v) for v in ("eps", "eps/8", "2*eps", 3)] == ["ε", "ε/8", "2·ε", ""]
    for bad in ("eps/0", "eps/3x", "2*eps/4", "epsilon"):
        with pytest.raises(ConfigError, match="alpha"):
            resolve_length(bad, 16, "alpha")


def test_cell_ids_at_eps_16_are_unchanged():
    p = command(["flatbench", "plan", "-m", "method=rap,mef,mef_dim_tim", "eps=16", "--wide"])   # --wide: the cell ids
    assert p.returncode == 0, p.stderr[-2000:]
    for overrides, cell_id in IDS_AT_16.items():
        line = next(ln for ln in p.stdout.splitlines() if f" {overrides} " in ln)
        assert cell_id in line, line


def test_presets_keep_their_ratios_at_another_eps_in_the_api():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    for eps_255 in (16, 32, 8):
        eps = eps_255 / 255
        rap = create_attack("rap", model, eps=eps)
        assert rap.alpha * 255 == pytest.approx(eps_255 / 8)
        assert rap.estimator.eps_n == pytest.approx(eps) and rap.estimator.alpha_n == pytest.approx(eps / 8)
        mef = create_attack("mef", model, eps=eps)
        assert mef.alpha * mef.steps == pytest.approx(2 * eps)   # α·T = 2ε, TransferAttack's ratio
    # At 16/255 the exact numbers the files held: 2/255, 16/255, 2/255 and 1.6/255.
    rap = create_attack("rap", model, eps=16 / 255)
    assert (rap.alpha, rap.estimator.eps_n, rap.estimator.alpha_n) == (2 / 255, 16 / 255, 2 / 255)
    assert create_attack("mef", model, eps=16 / 255).alpha == 1.6 / 255
    # The user's own value wins, and is then no rule.
    own = create_attack("rap", model, eps=32 / 255, alpha=2 / 255, eps_n=16 / 255)
    assert own.alpha == 2 / 255 and own.estimator.eps_n == 16 / 255 and own.estimator.alpha_n == pytest.approx(4 / 255)
    assert "alpha" not in own.rules and own.rules["estimator.alpha_n"] == "ε/8"


def test_describe_shows_the_rule_and_its_value_and_a_bad_rule_is_one_line():
    p = command(["flatbench", "describe", "rap", "eps=32"])
    assert p.returncode == 0, p.stderr
    assert "α = ε/8 = 4/255" in p.stdout and "ε_n = 32/255" in p.stdout and "α_n = 4/255" in p.stdout
    assert "estimator.eps_n = ε, estimator.alpha_n = ε/8" in p.stdout
    p = command(["flatbench", "describe", "mef", "eps=32", "alpha=2"])
    assert "T = 20, α = 2/255" in p.stdout
    p = command(["flatbench", "describe", "mef", "eps=24"])
    assert "α = ε/10 = 2.4/255" in p.stdout
    p = command(["flatbench", "describe", "mef", "alpha=eps/0"])
    assert p.returncode != 0 and len(p.stderr.strip().splitlines()) == 1 and "alpha='eps/0'" in p.stderr
