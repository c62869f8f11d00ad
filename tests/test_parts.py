"""Parts declare themselves (issue 24): one declaration per part is what the YAML, the
factories, create_attack's routing, the label, the printed loop, the columns and the cell id
read."""
from pathlib import Path

import pytest
import torch
import yaml

from flatbench.attacks import ESTIMATORS, OPTIMIZERS, TRANSFORMS, Param, create_attack
from flatbench.attacks.estimators import Estimator
from flatbench.attacks.transforms import InputTransform
from flatbench.cell.plan import hashed_settings, part_settings
from flatbench.cell.columns import settings_columns
from flatbench.cell.settings import CellSettings
from flatbench.core.registry import ConfigError

CONF = Path(__file__).resolve().parent.parent / "flatbench" / "conf"


def _yaml_defaults():
    """(file, declaration, {key: value}) for every part's config file."""
    for group, parts in (("optimizer", OPTIMIZERS), ("estimator", ESTIMATORS)):
        for f in sorted((CONF / group).glob("*.yaml")):
            node = yaml.safe_load(f.read_text())
            yield f"{group}/{f.name}", parts.get(node.pop("name")), node
    for f in sorted((CONF / "transforms").glob("*.yaml")):
        for name, node in (yaml.safe_load(f.read_text()) or {}).items():
            yield f"transforms/{f.name}", TRANSFORMS.get(name), dict(node or {})


@pytest.mark.parametrize("where,decl,node", list(_yaml_defaults()), ids=lambda v: v if isinstance(v, str) else "")
def test_yaml_defaults_agree_with_the_declarations(where, decl, node):
    """Each config file lists its part's declared parameters, with the declared defaults (lengths
    in 1/255 units); null is "the part's own default". Changing a default in one place only fails."""
    assert set(node) == set(decl.names()), where
    for key, value in node.items():
        p = decl.param(key)
        if value is None:
            continue
        want = p.default * 255 if p.length and p.default is not None else p.default
        assert value == pytest.approx(want) if isinstance(want, float) else value == want, (where, key, value, want)


def test_the_config_files_are_written_from_the_declarations(tmp_path):
    """A part's defaults live in its declaration only: each group file is what scripts/part_configs.py
    writes from it, and the script's --check fails on a stale one. Broken variant tried: PGN's declared
    beta changed to 0.6 with pgn.yaml left as it was."""
    import shutil
    import subprocess
    import sys

    from flatbench.attacks.part_configs import stale, write

    assert stale(CONF) == []
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "estimator" / "pgn.yaml").write_text((conf / "estimator" / "pgn.yaml").read_text().replace("beta: 0.5", "beta: 0.6"))
    (conf / "transforms" / "blur.yaml").write_text("blur: {}\n")
    assert stale(conf) == [str(conf / "estimator" / "pgn.yaml"), f"{conf / 'transforms' / 'blur.yaml'} (no such part)"]
    assert write(conf) == [conf / "estimator" / "pgn.yaml"] and "beta: 0.5 " in (conf / "estimator" / "pgn.yaml").read_text()
    root = Path(__file__).resolve().parent.parent
    p = subprocess.run([sys.executable, str(root / "scripts" / "part_configs.py"), "--check"], capture_output=True, text=True)
    assert p.returncode == 0 and "agrees" in p.stdout, p.stdout + p.stderr


def test_every_declared_part_has_a_config_file_and_the_reverse():
    assert sorted(f.stem for f in (CONF / "optimizer").glob("*.yaml")) == OPTIMIZERS.names()
    assert sorted(f.stem for f in (CONF / "estimator").glob("*.yaml")) == ESTIMATORS.names()
    assert sorted(f.stem for f in (CONF / "transforms").glob("*.yaml")) == TRANSFORMS.names()


def test_ranges_and_types_come_from_the_declaration_with_one_message():
    with pytest.raises(ConfigError, match=r"estimator\.r=-1 is out of range; allowed: > 0"):
        create_attack("pgn", torch.nn.Identity(), eps=16 / 255, r=-1.0)
    with pytest.raises(ConfigError, match=r"transforms\.tim\.kernel_size=4 is out of range; allowed: odd and >= 1"):
        create_attack("tim", torch.nn.Identity(), eps=16 / 255, kernel_size=4)
    with pytest.raises(ConfigError, match=r"estimator\.n_samples='x' has the wrong type; expected an integer"):
        create_attack("pgn", torch.nn.Identity(), eps=16 / 255, n_samples="x")
    with pytest.raises(ConfigError, match=r"estimator\.lookahead='up' is out of range; allowed: descent \| ascent"):
        create_attack("pgn", torch.nn.Identity(), eps=16 / 255, lookahead="up")


class _Quad(torch.nn.Module):
    def forward(self, x):
        return torch.stack([(x ** 2).flatten(1).sum(1), x.flatten(1).sum(1)], 1)


def test_a_new_part_needs_no_change_in_the_loop():
    """An estimator and a transform declared here, in a test, run through create_attack with
    their own label, printed lines, routed keywords, columns and cell-id entry."""

    class Scaled(Estimator):
        """g = scale·∇ℓ(x)."""

        def __init__(self, scale):
            self.scale = scale

        def __call__(self, ctx, x, y):
            return self.scale * ctx.grad(x, y, [("g",)])

        def describe(self, threat, alpha):
            return [f"g = {self.scale:g}·∇ℓ(x_eval)"]

        def evals_per_image(self, step):
            return 1

    class Flip(InputTransform):
        def __init__(self, dims):
            self.dims = dims

        def __call__(self, x, gen):
            return x.flip(-1) if self.dims == "w" else x.flip(-2)

        def describe(self):
            return f"Flip: z flipped along {self.dims}"

    ESTIMATORS.declare("scaled", "SCL", (Param("scale", 0.5, "number", lambda v: v > 0, "> 0"),),
                       published_with="nifgsm", published_label="SCALED-NI")(Scaled)
    TRANSFORMS.declare("flip", "Flip", (Param("dims", "w", "choice", choices=("w", "h")),))(Flip)
    try:
        model = _Quad()
        a = create_attack("mifgsm", model, eps=8 / 255, steps=3, estimator="scaled", transforms=["flip"], scale=0.25,
                          dims="h")
        assert a.label == "MI-FGSM+SCL+Flip"
        assert create_attack("nifgsm", model, eps=8 / 255, estimator="scaled").label == "SCALED-NI"
        text = a.describe()
        assert "g = 0.25·∇ℓ(x_eval)" in text and "Flip: z flipped along h" in text and "estimator scaled (SCL)" in text
        with pytest.raises(ConfigError, match=r"estimator\.scale=0 is out of range"):
            create_attack("mifgsm", model, eps=8 / 255, estimator="scaled", scale=0)
        x = torch.rand(2, 1, 4, 4)
        y = torch.zeros(2, dtype=torch.long)
        adv = a(x, y)
        assert (adv - x).abs().max() <= 8 / 255 + 1e-7 and adv.min() >= 0 and adv.max() <= 1
        s = CellSettings(data={"name": "digits"}, surrogate=["m"], optimizer="mifgsm", optimizer_kwargs={},
                         estimator="scaled", estimator_kwargs={}, transforms={"flip": {}}, eps=8.0, steps=3, alpha=8 / 3,
                         norm="linf", targeted=False, target_rule="dataset", seed=0, n_images=None)

        class _Data:
            def __len__(self):
                return 2

            def digest(self):
                return "d"

        sem = hashed_settings(s, a, _Data())
        assert sem["estimator"] == ["scaled", {"scale": 0.25}] and sem["transforms"] == [["flip", {"dims": "h"}]]
        cols = settings_columns(sem, a.label, "digits", "id")
        assert cols["estimator.scale"] == 0.25 and cols["flip.dims"] == "h" and cols["transforms"] == "flip(dims=h)"
        assert part_settings(a.estimator) == {"scale": 0.25}
    finally:
        ESTIMATORS._items.pop("scaled", None)
        TRANSFORMS._items.pop("flip", None)


def test_null_r_is_bound_to_alpha_once_and_the_part_passed_in_is_not_changed():
    est = ESTIMATORS.build("pgn")
    a = create_attack("pgn", torch.nn.Identity(), eps=16 / 255, estimator="pgn")
    assert a.estimator.r == pytest.approx(1.6 / 255) and "r = α = 1.6/255" in a.describe()
    from flatbench.attacks import Attack

    b = Attack(torch.nn.Identity(), eps=16 / 255, steps=4, estimator=est)
    assert est.r is None and b.estimator.r == pytest.approx(4 / 255)


def test_renamed_keys_keep_working_through_the_one_table():
    """0.2's max_batch is chunk since 0.3 (one word for images per forward pass): on the command
    line, in a config file and in create_attack it is read as chunk, with a note."""
    import warnings

    from flatbench.entry.compose import compose
    from flatbench.entry.config import chunk_setting
    from flatbench.core.migration import current_overrides

    args, notes = current_overrides(["max_batch=8", "hydra.sweeper.params.max_batch=4,8", "eps=4"])
    assert args == ["chunk=8", "hydra.sweeper.params.chunk=4,8", "eps=4"] and len(notes) == 2
    assert "max_batch is chunk since flatbench 0.3" in notes[0]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        a = create_attack("pgn", torch.nn.Identity(), eps=16 / 255, max_batch=8)
    assert a.chunk_setting == 8 and any("max_batch is chunk" in str(x.message) for x in w)
    assert chunk_setting(compose(["max_batch=16"])) == 16 and chunk_setting(compose([])) == "auto"


def test_a_part_built_directly_is_checked_against_its_declaration_too():
    """Penalty(...), DIM(...) and the like check their values as the factories do (0.2's classes
    checked in their constructors; the declarations must not lose that)."""
    from flatbench.attacks import DIM, SIM, TIM, Admix, Penalty
    from flatbench.attacks.estimators import Variance
    from flatbench.attacks.optimizers import Momentum

    for build, key in ((lambda: Penalty(-1.0, None, 3.0, 20, "descent", "pgn"), r"estimator\.beta=-1"),
                       (lambda: Penalty(0.5, 0.0, 3.0, 20, "descent", "pgn"), r"estimator\.r=0"),
                       (lambda: Variance(n_samples=0), r"estimator\.n_samples=0"),
                       (lambda: Momentum(decay=-1.0), r"optimizer\.decay=-1"),
                       (lambda: DIM(resize_rate=0.5), r"transforms\.dim\.resize_rate=0\.5"),
                       (lambda: SIM(0), r"transforms\.sim\.num_scale=0"),
                       (lambda: Admix(strength=-1.0), r"transforms\.admix\.strength=-1"),
                       (lambda: TIM(4), r"transforms\.tim\.kernel_size=4")):
        with pytest.raises(ConfigError, match=key + " is out of range"):
            build()
    assert Penalty(0.5, None, 3.0, 20, "descent", "pgn").params()["n_samples"] == 20


def test_each_part_keeps_its_own_state():
    """The estimator's state (ctx.state) and the optimizer's are separate dicts (issue 35: one
    string-keyed dict was shared by every part, so MI-FGSM's "m" was an estimator's to read or
    overwrite). An estimator declared here sees only what it put there itself."""

    seen = []

    class Peeking(Estimator):
        def __call__(self, ctx, x, y):
            seen.append(sorted(ctx.state))
            ctx.state["mine"] = ctx.state.get("mine", 0) + 1
            return ctx.grad(x, y, [("g",)])

        def describe(self, threat, alpha):
            return ["g = ∇ℓ(x_eval)"]

        def evals_per_image(self, step):
            return 1

    ESTIMATORS.declare("peeking", "PEEK")(Peeking)
    try:
        for method in ("mifgsm", "nifgsm", "gra"):
            seen.clear()
            a = create_attack(method, _Quad(), eps=8 / 255, steps=3, estimator="peeking")
            a(torch.rand(2, 1, 4, 4), torch.zeros(2, dtype=torch.long))
            assert seen == [[], ["mine"], ["mine"]], (method, seen)
    finally:
        ESTIMATORS._items.pop("peeking", None)
