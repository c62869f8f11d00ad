"""Fuzzing: randomly mutated configs and malformed CSV/PNG inputs.

Every input must end in success or in a clear error (ConfigError and its DataError
subclass, or Hydra's composition errors for the config layer); anything else - a
KeyError, a TypeError, an IndexError from deep inside - is a bug. The case counts are
bounded so that `make test` stays fast; FLATBENCH_FUZZ_CASES raises them.
"""
import os
import random

import pytest
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from flatbench.attacks import build_attack
from flatbench.entry.config import attack_kwargs, resolve
from flatbench.entry.settings import flatness_settings
from flatbench.entry.target_zoo import parse_targets
from flatbench.data import DATASETS
from flatbench.data.folders import DataError
from flatbench.core.registry import ConfigError
from helpers import compose_config
from images import make_layouts

CASES = int(os.environ.get("FLATBENCH_FUZZ_CASES", "150"))
KEYS = {
    "eps": ["0", "-1", "1e9", "16", "abc", "null", "255", "255.5", "[1,2]"],
    "steps": ["0", "-5", "10", "1.5", "x", "null"],
    "alpha": ["0", "-1", "1.6", "null", "nan"],
    "norm": ["linf", "l2", "l1", "LINF", "null"],
    "batch_size": ["0", "1", "-2", "64", "q"],
    "chunk": ["0", "auto", "null", "-1", "autoo", "8", "true"],
    "memory_budget_mb": ["0", "-1", "1", "null"],
    "amp": ["bf16", "fp8", "null", "fp16"],
    "target_rule": ["dataset", "random", "least_likely", "most_likely"],
    "n_images": ["0", "1", "-3", "null"],
    "surrogate": ["digits-cnn", "digits-cnnn", "[]", "[digits-cnn,digits-mlp]", "resnet50.tv_in1kk"],
    "estimator.beta": ["-1", "0", "0.5", "x"],
    "estimator.r": ["0", "-2", "2.55", "null"],
    "estimator.zeta": ["-1", "0", "3"],
    "estimator.n_samples": ["0", "1", "-4", "2.5"],
    "transforms.tim.kernel_size": ["0", "4", "7", "-3"],
    "transforms.dim.resize_rate": ["0.5", "1.0", "1.1", "x"],
    "transforms.dim.prob": ["-0.1", "0.5", "2"],
    "optimizer.decay": ["-1", "0", "1.0", "x"],
    "targets.extra": ["{model: digits-cnn, role: normal}", "{model: digits-cnn, role: boss}", "{mdl: x}", "{}"],
    "flatness.rho": ["0", "-8", "8"],
    "flatness.k_samples": ["0", "16"],
}
GROUPS = {"method": ["pgn", "gnp", "ifgsm", "pgnn", "dim_tim"], "estimator": ["pgn", "gnp", "plain", "vmii"],
          "transforms": ["[dim]", "[tim]", "[dim,tim]", "[timm]"], "optimizer": ["ifgsm", "mifgsm", "adam"],
          "flatness": ["on", "off", "maybe"]}


def _compose(overrides):
    return compose_config(overrides)


def _mutation(rng: random.Random):
    out = [f"{g}={rng.choice(v)}" for g, v in GROUPS.items() if rng.random() < 0.4]
    for key in rng.sample(list(KEYS), rng.randint(1, 4)):
        prefix = "++" if key.split(".")[0] in ("estimator", "transforms", "optimizer", "flatness", "targets") else ""
        out.append(f"{prefix}{key}={rng.choice(KEYS[key])}")
    return out


def test_fuzz_configs_fail_clearly_or_succeed():
    rng = random.Random(1234)
    outcomes = {"ok": 0, "config_error": 0, "composition_error": 0}
    for _ in range(CASES):
        overrides = _mutation(rng)
        try:
            cfg = _compose(overrides)
        except (HydraException, OmegaConfBaseException):
            outcomes["composition_error"] += 1
            continue
        try:
            s = resolve(cfg)
            build_attack(None, chunk=cfg.chunk, memory_budget_mb=cfg.memory_budget_mb, amp=cfg.amp,
                         **attack_kwargs(s))
            parse_targets(cfg.targets)
            flatness_settings(cfg.flatness)
            outcomes["ok"] += 1
        except ConfigError as exc:
            assert str(exc), overrides
            outcomes["config_error"] += 1
        except (HydraException, OmegaConfBaseException) as exc:
            # An interpolation that cannot resolve is the user's; but OmegaConf's ConfigKeyError,
            # ConfigTypeError and ConfigAttributeError (KeyError/TypeError/AttributeError
            # subclasses) raised here come from flatbench reading a missing or mistyped key:
            # exactly the bugs this test exists for.
            if isinstance(exc, (KeyError, TypeError, AttributeError)):
                pytest.fail(f"{overrides}: flatbench read a missing or mistyped key: {type(exc).__name__}: {exc}")
            outcomes["composition_error"] += 1
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{overrides} raised {type(exc).__name__}: {exc}")
    assert sum(outcomes.values()) == CASES
    assert outcomes["ok"] and outcomes["config_error"] and outcomes["composition_error"], outcomes
    print(f"fuzzed configs: {outcomes}")


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    kind = rng.choice(["truncate", "flip", "garbage", "empty", "prefix"])
    if kind == "truncate":
        return data[: rng.randint(0, len(data) - 1)]
    if kind == "flip":
        b = bytearray(data)
        for _ in range(rng.randint(1, 20)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if kind == "garbage":
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
    if kind == "empty":
        return b""
    return data[:8] + bytes(rng.randrange(256) for _ in range(50))


CSV_MUTATIONS = [
    lambda t, r: t.replace("TrueLabel", "Label"), lambda t, r: t + "img999,u,0,0,1,1,5\n",
    lambda t, r: t.replace(",1,500,", ",-4,500,"), lambda t, r: t.replace(",38,", ",3.5,"),
    lambda t, r: t.replace("\n", "\n\"", 1), lambda t, r: "", lambda t, r: t.split("\n")[0] + "\n",
    lambda t, r: t.replace(",", ";"), lambda t, r: t + "\x00\x01\x02\n", lambda t, r: t.replace("img001", "img000"),
    lambda t, r: "".join(r.choice(t) for _ in range(len(t))),
    lambda t, r: t.encode("utf-16").decode("latin-1"),
]


def test_fuzz_malformed_png_and_csv(tmp_path):
    rng = random.Random(99)
    base = make_layouts(tmp_path / "base")["nips17"]
    good_png = (base / "images" / "img000.png").read_bytes()
    good_csv = (base / "images.csv").read_text()
    n_png, n_csv = max(10, CASES // 3), max(12, CASES // 5)
    outcomes = {"ok": 0, "data_error": 0}
    for i in range(n_png + n_csv):
        d = tmp_path / f"case{i}"
        import shutil
        shutil.copytree(base, d)
        if i < n_png:
            (d / "images" / f"img00{rng.randrange(6)}.png").write_bytes(_mutate_bytes(good_png, rng))
        else:
            mut = CSV_MUTATIONS[(i - n_png) % len(CSV_MUTATIONS)]
            (d / "images.csv").write_text(mut(good_csv, rng), errors="replace")
        for skip in (False, True):
            try:
                s = DATASETS.build("nips17", root=str(d), image_size=16, skip_bad_images=skip, num_workers=1)
                assert s.images.shape[1:] == (3, 16, 16) and len(s) == len(s.labels)
                outcomes["ok"] += 1
            except DataError as exc:
                assert str(d) in str(exc) or "row" in str(exc) or "empty" in str(exc), exc
                outcomes["data_error"] += 1
            except Exception as exc:  # noqa: BLE001
                pytest.fail(f"case {i} (skip={skip}) raised {type(exc).__name__}: {exc}")
        shutil.rmtree(d)
    assert outcomes["ok"] and outcomes["data_error"], outcomes
    print(f"fuzzed files: {n_png} PNG + {n_csv} CSV mutations x 2 modes: {outcomes}")
