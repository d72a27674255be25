"""Off-the-shelf encoders (``pretrained:timm:NAME``): a compare row measured as it is, its weights from a local file
that a trained row beside it does not take; bad names and missing weights refused in one line; a training method
refuses the identity head."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from invprop.cli import main
from invprop.config import from_dict, preset
from invprop.engine import Trainer, load_checkpoint
from invprop.errors import ConfigError
from invprop.evaluation.compare import parse_methods

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(11)
    source = timm.create_model("test_resnet")  # with its classifier, as a downloaded file holds it
    path = tmp_path_factory.mktemp("weights") / "test_resnet.pth"
    torch.save(source.state_dict(), path)
    return path, source.state_dict()


def test_a_pretrained_row_is_measured_as_it_is_beside_a_trained_row(weights, tmp_path: Path) -> None:
    path, saved = weights
    out = tmp_path / "cmp"
    code = main(["-q", "compare", "--preset", "digits", "--methods", "pretrained:timm:test_resnet,simclr", "--epochs",
                 "1", "--set", "data.subset=300", "--set", f"model.pretrained_file={path}", "--no-criteria",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    rows = {row["method"]: row for row in json.loads((out / "results.json").read_text())["rows"]}
    pretrained, trained = rows["pretrained:timm:test_resnet"], rows["simclr"]
    assert pretrained["epochs"] == 0 and trained["epochs"] == 1
    for row in (pretrained, trained):
        assert all(isinstance(row[key], float) for key in ("knn_top1", "linear_top1", "untrained_knn_top1"))
    # The row measured the network of the file: its backbone's weights (the first conv summed to one channel, as
    # timm adapts three-channel weights to grey images), behind no head.
    state = load_checkpoint(out / "pretrained-timm-test_resnet" / "last.pt")
    backbone = {k.removeprefix("encoder.backbone.net."): v for k, v in state["model"].items()}
    first = "conv1.0.weight"  # test_resnet's deep stem
    assert torch.allclose(backbone[first], saved[first].sum(dim=1, keepdim=True))
    assert all(torch.equal(backbone[k], v) for k, v in saved.items() if not k.startswith("fc.") and k != first)
    assert state["config"]["model"]["head"] == "identity" and pretrained["knn_top1"] == pretrained["knn_backbone_top1"]
    assert "model.pretrained_file" not in (out / "simclr" / "config.yaml").read_text()
    assert "pretrained_file: null" in (out / "simclr" / "config.yaml").read_text()  # the file was not the trained row's
    assert main(["-q", "report", str(out), "--out", str(tmp_path / "report")]) == 0  # the table, both runs' pages
    assert "pretrained:timm:test_resnet" in (tmp_path / "report" / "report.html").read_text()


@pytest.mark.parametrize("name", ["pretrained:resnet50", "pretrained:"])
def test_a_pretrained_name_that_is_not_a_timm_model_is_one_line(name: str) -> None:
    with pytest.raises(ConfigError, match="pretrained:timm:NAME") as error:
        parse_methods(f"invp,{name}")
    assert "\n" not in str(error.value)


def test_missing_weights_say_where_to_put_the_file(monkeypatch, tmp_path: Path, capsys) -> None:
    from invprop.models import timm_backbone

    monkeypatch.setattr(timm_backbone, "_reachable", lambda host: False)
    monkeypatch.setattr(timm_backbone, "_cached_weights", lambda timm, arch: None)
    code = main(["-q", "compare", "--preset", "digits", "--methods", "pretrained:timm:test_resnet", "--out",
                 str(tmp_path / "cmp")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "model.pretrained_file=PATH" in err


def test_a_method_that_trains_its_head_refuses_the_identity_head(tmp_path: Path) -> None:
    cfg = from_dict({"method": "simclr", "model": {"head": "identity"}}, base=preset("digits", "simclr"))
    with pytest.raises(ConfigError, match="model.head=identity gives method simclr no head to train"):
        Trainer(cfg, tmp_path / "run", progress=False)


def test_embed_and_export_take_a_pretrained_encoder(weights, tmp_path: Path, capsys) -> None:
    import numpy as np

    path, _ = weights
    source = "pretrained:timm:test_resnet"
    assert main(["-q", "embed", "--checkpoint", source, "--dataset", "digits", "--split", "test", "--out",
                 str(tmp_path / "emb.npz"), "--set", f"model.pretrained_file={path}"]) == 0  # fmt: skip
    saved = np.load(tmp_path / "emb.npz")
    assert saved["features"].shape[1] == saved["embeddings"].shape[1]  # no head: the embedding is the feature
    code = main(["-q", "export", "--checkpoint", source, "--format", "timm"])
    assert code == 2 and "give --out FILE" in capsys.readouterr().err  # no run folder to write beside
    out = tmp_path / "backbone.pth"
    assert main(["-q", "export", "--checkpoint", source, "--format", "timm", "--out", str(out), "--set",
                 f"model.pretrained_file={path}"]) == 0  # fmt: skip
    exported = torch.load(out, weights_only=True)
    assert all(torch.equal(exported[k], v) for k, v in weights[1].items() if not k.startswith("fc."))  # RGB, native
