"""Model sources (issue 35, step 3): every name form is owned by one registered source, and a new
source is one class plus one registration, seen by building, the pre-crafting check, provenance and
the listing without any other module changing."""
import ast
import hashlib
from pathlib import Path

import pytest
import torch

from flatbench.attacks import create_attack
from flatbench.models import SOURCES, ModelSource, Preprocess, load_model, source_of
from flatbench.models.testbed import MEAN, NUM_CLASSES, STD, TESTBED
from flatbench.core.registry import ConfigError

ROOT = Path(__file__).resolve().parent.parent / "flatbench"


@pytest.mark.parametrize("name,source", [
    ("digits-cnn", "testbed"), ("resnet18.a1_in1k", "timm"), ("timm:resnet18", "timm"),
    ("torchvision:resnet18.IMAGENET1K_V1", "torchvision"), ("resnet18.a1_in1k@/some/w.safetensors", "checkpoint"),
])
def test_each_name_form_is_owned_by_its_source(name, source):
    assert source_of(name).name == source


def test_an_unknown_name_fails_at_the_last_source_with_the_valid_forms():
    with pytest.raises(ConfigError, match=r"unknown model 'digits-cnm': not a testbed model .*Did you mean 'digits-cnn'"):
        load_model("digits-cnm")


class ToySource(ModelSource):
    """A digits MLP with weights from a file the test writes: a source the package does not have."""

    name = "toy"

    def __init__(self, path: Path):
        self.path = path

    def claims(self, name):
        return name == "toy-mlp"

    def load(self, name, **_):
        from safetensors.torch import load_file

        net = TESTBED["digits-mlp"].build()
        net.load_state_dict(load_file(str(self.path)))
        return Preprocess(net, MEAN, STD, name=name).eval().requires_grad_(False)

    def classes(self, name, label_offset=None, num_classes=None):
        return NUM_CLASSES

    def weights_file(self, name, zoo_dir=None):
        return self.path

    def listing(self, name):
        return {"source": "toy", "family": "MLP", "test_acc": None, "cached": True}

    def known(self):
        return ["toy-mlp"]


@pytest.fixture
def toy(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(3)
    path = tmp_path / "toy.safetensors"
    save_file(TESTBED["digits-mlp"].build().state_dict(), str(path))
    SOURCES.add("toy", ToySource(path), before="timm")
    try:
        yield path
    finally:
        SOURCES._items.pop("toy")


def test_a_new_source_is_one_class_and_one_registration(toy):
    """Built, pre-checked, fingerprinted and listed through the package's own entry points. Broken
    variant tried: registering it last (after timm, which claims every name) fails here with
    timm's unknown-model error."""
    from flatbench.cell.evaluation import precheck_target
    from flatbench.data import DATASETS
    from flatbench.entry.listing import list_models
    from flatbench.cell.provenance import provenance

    model = load_model("toy-mlp")
    data = DATASETS.build("digits", split="test").subset(8)
    x, y = data.floats(slice(0, 8)), data.labels[:8]
    adv = create_attack("ifgsm", model, eps=8 / 255, steps=3)(x, y)
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert precheck_target({"model": "toy-mlp"}, data, pretrained=True)
    digest = provenance("cpu", ["toy-mlp"], {})["weights_sha256"]["toy-mlp"]
    assert digest == hashlib.sha256(toy.read_bytes()).hexdigest()
    assert [r["source"] for r in list_models("toy*")] == ["toy"]


def test_only_the_sources_know_which_source_a_name_is():
    """Outside flatbench/models (and the testbed's own command, entry/zoo_command.py), nothing tests a name against
    the testbed table or a hub's library: it asks source_of(name)."""
    offenders = []
    for f in sorted(ROOT.rglob("*.py")):
        rel = f.relative_to(ROOT).as_posix()
        if rel.startswith("models/") or rel == "entry/zoo_command.py":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Compare) and any(isinstance(o, (ast.In, ast.NotIn)) for o in node.ops) \
                    and any(isinstance(c, ast.Name) and c.id == "TESTBED" for c in node.comparators):
                offenders.append(f"{rel}:{node.lineno} tests a name against TESTBED")
            if isinstance(node, ast.Attribute) and node.attr == "library":
                offenders.append(f"{rel}:{node.lineno} reads a spec's library")
    assert not offenders, offenders


def test_a_new_report_output_is_one_registered_function(tmp_path, capsys):
    """The report's outputs are a registry too (issue 35, step 3): one function added to OUTPUTS writes its
    file through the report's own entry point, beside the others, and the guard against writing an input
    holds for it. Broken variant tried: build_report writing a fixed list instead of iterating OUTPUTS."""
    import pandas as pd

    from flatbench.report.outputs import OUTPUTS
    from helpers import SMALL, report_main, run

    run(["flatbench", *SMALL, f"hydra.run.dir={tmp_path / 'cell'}"], None, tmp_path)

    def write_counts(ctx):
        ctx.put("counts.csv", ctx.df.groupby("attack").size().rename("rows").to_csv())

    OUTPUTS.add("counts", write_counts, "rows per attack")
    try:
        assert report_main([str(tmp_path / "cell"), "--out", str(tmp_path / "rep")], capsys)[0] == 0
    finally:
        OUTPUTS._items.pop("counts")
    counts = pd.read_csv(tmp_path / "rep" / "counts.csv")
    assert counts["rows"].sum() == len(pd.read_csv(tmp_path / "cell" / "results.csv"))
    assert (tmp_path / "rep" / "table.md").exists() and list(OUTPUTS._items)[:2] == ["significance", "tables"]
