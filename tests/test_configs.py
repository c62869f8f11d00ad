"""Every option of every config group composes, and what it names can be built."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import torch

from flatbench import create_attack
from flatbench.attacks import METHODS, build_attack
from flatbench.cell.plan import hashed_settings, load_data
from flatbench.entry.compose import CONFIG_DIR
from flatbench.entry.config import attack_kwargs, resolve
from flatbench.entry.target_zoo import parse_targets
from flatbench.models import TESTBED
from flatbench.cell.loggers import build_logger
from flatbench.core.registry import ConfigError
from helpers import compose_config

GROUPS = ["data", "targets", "optimizer", "estimator", "transforms", "logger", "paths", "method", "experiment"]


def options(group):
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def _build(cfg):
    s = resolve(cfg)
    attack = build_attack(None, chunk=cfg.chunk, **attack_kwargs(s))
    zoo = parse_targets(cfg.targets)
    build_logger(dict(cfg.logger))
    data = load_data(s)
    for key, entry in zoo.items():
        _check_target(key, entry)
    hashed_settings(s, attack, data)
    return attack


def _check_target(key, entry):
    """Every model a zoo names parses (testbed, timm architecture and tag, torchvision builder and
    weights) and declares the class count of the data sets it is meant for, through the check the
    command line runs before crafting; models the config cannot answer for are built, random-init."""
    from flatbench.cell.evaluation import check_classes, precheck_target
    from flatbench.models import load_model

    # Each model against the data sets it is meant for (a group option composes beside defaults
    # of the other groups): testbed models on digits, hub models on an ImageNet layout.
    data = _reference_data("data=digits" if entry["model"] in TESTBED else "data=nips17")
    if not precheck_target(entry, data, pretrained=False):
        model = load_model(entry["model"], pretrained=False, progress=False,
                           **{k: entry[k] for k in ("label_offset", "num_classes") if entry.get(k) is not None})
        check_classes(model, data, "cpu", f"targets.{key}")


_DATA = {}


def _reference_data(override):
    if override not in _DATA:
        _DATA[override] = load_data(resolve(compose_config([override])))
    return _DATA[override]


CASES = [(g, o) for g in GROUPS for o in options(g)]


@pytest.fixture(autouse=True)
def generated_data(layouts, monkeypatch):
    # The ImageNet-compatible data configs read ${paths.data_dir}; point it at generated PNGs.
    monkeypatch.setenv("FLATBENCH_DATA", str(layouts["root"]))


@pytest.mark.parametrize("group,option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_every_option_composes_and_builds(group, option):
    override = f"{group}=[{option}]" if group == "transforms" else f"{group}={option}"
    # an ensemble method (CWA, the member means) composes with an ensemble surrogate; with one model it
    # fails at startup
    est = option if group == "estimator" else METHODS[option][1] if group == "method" else None
    ensemble = est is not None and _needs_ensemble(est)
    _build(compose_config([override] + (["surrogate=[digits-cnn,digits-resnet]"] if ensemble else [])))


def _needs_ensemble(estimator: str) -> bool:
    from flatbench.attacks import ESTIMATORS
    return "members" in ESTIMATORS.get(estimator).names()


def test_every_group_has_options():
    for g in GROUPS:
        assert options(g), g


def test_zoos_merge_as_dicts():
    cfg = compose_config(["targets=[cnn,vit,defenses]"])
    zoo = parse_targets(cfg.targets)
    assert {"resnet50", "vit-b16", "inc-v3-jpeg"} <= set(zoo) and zoo["inc-v3-jpeg"]["role"] == "defense"


def test_paper_experiments_compose_with_their_settings():
    cfg = compose_config(["experiment=pgn_table1", "method=tim"])
    s = resolve(cfg)
    assert s.surrogate == ["inception_v3.tf_in1k"] and s.eps == 16 and s.steps == 10
    assert s.transforms["tim"]["kernel_size"] == 7 and s.data["image_size"] == 299
    cfg = compose_config(["experiment=pgn_table1", "method=tim", "transforms.tim.kernel_size=9"])
    assert resolve(cfg).transforms["tim"]["kernel_size"] == 9  # an explicit value wins over the experiment's
    assert resolve(compose_config(["method=tim"])).transforms["tim"].get("kernel_size") is None  # -> TIM's own 15
    import pandas as pd
    for exp in ("transferattack_rn50", "transferattack_rn18"):
        cfg = compose_config([f"experiment={exp}"], hydra=True)
        # Every row of the published table that flatbench implements, GNP as TransferAttack's port.
        pub = pd.read_csv(Path(CONFIG_DIR) / "published" / f"{exp}.csv")
        assert sorted(cfg.hydra.sweeper.params.method.split(",")) == sorted(set(pub["method"]))
        assert "gnp_ta" in cfg.hydra.sweeper.params.method and "gnp," not in cfg.hydra.sweeper.params.method + ","
        zoo = set(parse_targets(cfg.targets))
        assert zoo == set(pub["target"]) - {"HGD", "NRP", "DiffPure"}
        assert cfg.preprocess == "transferattack" and cfg.quantize == "truncate"
        assert resolve(cfg).transforms.get("dim") is None and cfg.transform_defaults.dim.interpolation == "bilinear"
    assert compose_config([]).preprocess == "own" and compose_config([]).quantize == "round"
    # Each TransferAttack class runs with its own T and alpha (RAP 400, 2/255; MEF 20, 1.6/255 and mu 0.5).
    ta = ["experiment=transferattack_rn50"]
    for method, steps, alpha, decay in (("mifgsm", 10, 1.6, 1.0), ("rap", 400, 2.0, 1.0), ("mef", 20, 1.6, 0.5),
                                        ("gra", 10, 1.6, 1.0)):
        s = resolve(compose_config(ta + [f"method={method}"]))
        assert (s.steps, round(s.alpha, 6), s.optimizer_kwargs["decay"]) == (steps, alpha, decay), method
        attack = create_attack(method, torch.nn.Identity(), eps=16 / 255)
        assert (attack.steps, attack.alpha * 255, attack.optimizer.decay) == (steps, pytest.approx(alpha), decay), method
    s = resolve(compose_config(ta + ["method=rap", "steps=10", "optimizer.decay=0.9"]))   # the command line still wins
    assert (s.steps, s.optimizer_kwargs["decay"]) == (10, 0.9)
    assert compose_config(["experiment=gnp_table"], hydra=True).hydra.sweeper.params.eps == "4,8,16"


def test_an_experiments_transform_defaults_reach_the_attack():
    """transform_defaults fills a selected transform's settings that the command line leaves unset. The
    defect: dim.yaml wrote DIM's own interpolation (nearest), so TransferAttack's experiments, which set
    bilinear as its dim.py does, crafted their DIM rows with nearest."""
    for exp in ("transferattack_rn50", "transferattack_rn18"):
        cfg = compose_config([f"experiment={exp}", "method=dim"])
        assert resolve(cfg).transforms["dim"]["interpolation"] == "bilinear", exp
    assert resolve(compose_config(["method=dim"])).transforms["dim"].get("interpolation") in (None, "nearest")
    cfg = compose_config(["experiment=transferattack_rn50", "method=dim", "transforms.dim.interpolation=area"])
    assert resolve(cfg).transforms["dim"]["interpolation"] == "area"   # the command line wins


def test_method_configs_mirror_presets():
    assert set(options("method")) == set(METHODS)
    for name, (opt, est, tfs) in METHODS.items():
        ensemble = ["surrogate=[digits-cnn,digits-resnet]"] if _needs_ensemble(est) else []
        cfg = compose_config([f"method={name}", *ensemble])
        assert cfg.optimizer.name == opt and cfg.estimator.name == est and tuple(cfg.transforms) == tfs
        assert _build(cfg).label


def test_composed_combination_and_units():
    cfg = compose_config(["method=pgn", "transforms=[dim,tim]", "eps=16", "optimizer=nifgsm", "estimator.r=2"])
    a = _build(cfg)
    assert a.label == "NI-FGSM+PGN+DIM+TIM"
    assert a.eps == pytest.approx(16 / 255) and a.alpha == pytest.approx(1.6 / 255)
    assert a.estimator.r == pytest.approx(2 / 255)


def test_defaults_come_from_components():
    cfg = compose_config([])
    s = resolve(cfg)
    assert s.eps == cfg.data.default_eps and s.alpha == s.eps / s.steps
    gnp = _build(compose_config(["method=gnp"])).estimator
    assert gnp.r == pytest.approx(0.01)


def test_unknown_top_level_key_fails_at_composition(tmp_path):
    import shutil

    with pytest.raises(Exception, match="epss"):
        compose_config(["epss=3"])
    with pytest.raises(Exception, match="steps"):
        compose_config(["steps=ten"])
    conf = tmp_path / "conf"
    shutil.copytree(CONFIG_DIR, conf)
    (conf / "experiment" / "typo.yaml").write_text("# @package _global_\nn_imges: 3\n")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises(Exception, match=r"(?s)experiment/typo.*n_imges"):
            compose("config", overrides=["experiment=typo"])


def test_unknown_group_key_names_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'bta'.*beta.*Did you mean 'beta'"):
        _build(compose_config(["estimator=pgn", "+estimator.bta=1"]))


@pytest.mark.parametrize("override,match", [
    ("eps=0", "eps=0"), ("eps=300", "eps=300"), ("steps=0", "steps"), ("estimator=pgn estimator.beta=-1", "beta"),
    ("estimator=pgn estimator.r=0", "estimator.r"), ("estimator=pgn estimator.zeta=-1", "zeta"),
    ("estimator=pgn estimator.n_samples=0", "n_samples"), ("transforms=[tim] transforms.tim.kernel_size=4", "kernel_size"),
    ("transforms=[dim] transforms.dim.resize_rate=0.9", "resize_rate"), ("batch_size=0", "batch_size"),
    ("norm=l3", "norm"), ("surrogate=digits-cnnn", "digits-cnn"),
])
def test_out_of_range_values_fail(override, match):
    with pytest.raises(ConfigError, match=match):
        cfg = compose_config(override.split())
        _build(cfg)
        from flatbench.models import load_surrogate
        load_surrogate(resolve(cfg).surrogate)


def test_one_name_per_concept():
    """The groups that choose the loop's parts carry the names the code, the columns, the cell
    id and `flatbench list methods` use (issue 16): `optimizer` (the update rule), `estimator`
    (the gradient it follows; a gradient-norm penalty is one kind) and `transforms`; `attack`
    is the whole method (the Attack, create_attack, the label column), never one of its parts."""
    from flatbench.attacks import ESTIMATORS, OPTIMIZERS, TRANSFORMS
    from flatbench.entry.listing import list_methods
    from flatbench.cell.columns import COLUMNS

    for group, registry in (("optimizer", OPTIMIZERS), ("estimator", ESTIMATORS), ("transforms", TRANSFORMS)):
        assert options(group) == registry.names(), group
        assert registry.kind == group.rstrip("s")
    groups = {p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir()}
    assert not groups & {"attack", "penalty"}
    cfg = compose_config(["method=vmifgsm"])
    s = resolve(cfg)
    assert (s.optimizer, s.estimator) == ("mifgsm", "vmi")
    attack = build_attack(None, **attack_kwargs(s))
    semantic = hashed_settings(s, attack, load_data(s))
    assert semantic["optimizer"][0] == "mifgsm" and semantic["estimator"][0] == "vmi"
    assert {"attack", "optimizer", "estimator", "transforms"} <= set(COLUMNS) and "penalty" not in COLUMNS
    (row,) = list_methods("vmifgsm")
    assert (row["optimizer"], row["estimator"], row["label"]) == ("mifgsm", "vmi", "VMI-FGSM")
    assert compose_config([]).estimator.name == "plain"
