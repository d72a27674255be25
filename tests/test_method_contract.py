"""The contract every registered method keeps, parametrised over the registry -- a new method is covered without
editing a test:

* its spec fits its settings (every key it names exists), and every default that differs from its published value
  says why;
* a short digits run (its spec's :class:`~invprop.methods.SmokeRun`) has finite losses, reaches the level the spec
  states -- relative to the same encoder untrained, or to raw pixels -- and its metrics.json keeps its spec's terms
  and nothing of another method's; the report can draw every curve the spec declares;
* a run stopped after an epoch and resumed ends exactly where an uninterrupted run does;
* under two processes it trains the weights one process would with the same global batch (``Torchrun.EXACT``), or
  at least the same weights on both processes (``Torchrun.RUNS``);
* two training steps before one optimiser step lose neither step's update.

Colour-only methods run on the digits tinted with a random colour per image (written once per session as an image
folder), since the digits themselves are grey.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from gloo import run_gloo
from invprop.config import PRESETS, Config, from_dict, help_texts, preset, preset_values, provenance, validate
from invprop.engine import Trainer
from invprop.evaluation.compare import untrained_knn
from invprop.evaluation.report import read_history
from invprop.methods import METHODS, Accumulation, Batch, Floor, Method, Torchrun
from invprop.settings import deep_update
from unit_methods import N, unit_method

NAMES = list(METHODS)
#: The methods whose digits preset is a ViT (ViT-Tiny: 7 s to minutes an epoch on digits, against 0.6 s for the conv
#: net): their short runs and resume tests are slow.
VIT_METHODS = {name for name in NAMES if str(preset_values("digits", name).get("model", {}).get("backbone", "")).startswith("timm:")}  # fmt: skip
#: The short digits runs that took over 20 s alone on the 2-core CI machine (pytest --durations, 2026-12-06): the
#: pretext tasks' extra forward passes (tiles, patches, rotations), the longer runs (RotNet 20 epochs) and the ViTs.
#: Marked slow, out of CI's default run (``pytest -m slow`` runs them); their resume and accumulation tests still run
#: (but the ViTs' resumes).
SLOW_SHORT_RUNS = {"context-prediction", "cpc", "jigsaw", "multitask", "pirl", "rotnet"} | VIT_METHODS
SLOW_RESUMES = VIT_METHODS
#: What every run's metrics.json holds whatever its method; the rest must be its method's terms.
SHARED_METRICS = {
    "method", "dataset", "epochs", "epochs_planned", "loss", "seconds", "knn_top1", "knn_top5", "knn_backbone_top1",
    "knn_backbone_top5", "rankme", "rankme_backbone", "skipped_files", "skipped_file_examples", "baseline_raw_knn_top1", "baseline_raw_knn_top5",
}  # fmt: skip
#: The side the tinted digits are written at (colorization's decoder predicts a quarter of it).
TINTED_SIDE = 16


@pytest.fixture(scope="session")
def tinted_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits, each tinted with a random colour (colour says nothing of the class), as an image folder with a
    train and a test split."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("tinted-digits")
    for index, (image, label) in enumerate(zip(digits.images[:600], digits.target[:600])):
        grey = (image / 16.0)[..., None]
        tint = rng.uniform(0.2, 1.0, size=3)
        rgb = (255 * (grey * tint + (1 - grey) * (1 - tint) * 0.3)).astype(np.uint8)
        folder = root / ("test" if index % 4 == 0 else "train") / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).resize((TINTED_SIDE, TINTED_SIDE), Image.NEAREST).save(folder / f"{index}.png")
    return root


def smoke_config(name: str, tinted: Path | None = None, **values: Any) -> Config:
    """``name``'s digits preset with its smoke run's settings (the tinted digits for colour-only methods)."""
    spec = METHODS.get(name)
    settings: dict[str, Any] = {"method": name, "epochs": spec.smoke.epochs}
    if spec.colour_only:
        assert tinted is not None
        settings["data"] = {"name": f"imagefolder:{tinted}", "image_size": TINTED_SIDE, "cache_dir": None}
    deep_update(settings, dict(spec.smoke.settings))
    deep_update(settings, values)
    return validate(from_dict(settings, base=preset("digits", name)))


@pytest.mark.parametrize("name", NAMES)
def test_the_spec_fits_the_settings(name: str) -> None:
    spec = METHODS.get(name)
    assert spec.name == name and spec.summary and spec.terms, name
    for preset_name in PRESETS:
        keys = help_texts(preset(preset_name, name))  # a preset's values for unknown keys would raise here
        named = {key for table in (spec.references, spec.deviations) for key in (k for v in table.values() for k in v)}
        assert named | set(spec.headline) <= set(keys), (preset_name, sorted(named | set(spec.headline) - set(keys)))
    for curve in spec.curves:
        assert set(curve.keys) <= set(spec.terms), (curve.title, "metrics.json keeps what the report draws")
    assert spec.smoke.metric in ("knn_top1", "knn_backbone_top1")
    for variant, row in spec.ablation.variants.items() if spec.ablation else ():
        validate(from_dict(dict(row.overrides), base=preset("digits", name))), variant


@pytest.mark.parametrize("name", NAMES)
def test_every_default_that_differs_from_its_published_value_says_why(name: str) -> None:
    for preset_name in PRESETS:
        origins = provenance(preset(preset_name, name), preset_name)
        unexplained = [key for key, origin in origins.items() if origin.reason == ""]
        assert unexplained == [], f"{name} preset {preset_name}: {unexplained} differ from the paper without a reason"
    library = provenance(from_dict({"method": name}))
    assert [key for key, origin in library.items() if origin.reason == ""] == []
    own = METHODS.get(name).sections()
    assert any(key.split(".")[0] in own for key in library) or not METHODS.get(name).references, name


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_SHORT_RUNS else name for name in NAMES]
)
def test_a_short_digits_run_reaches_its_level_and_keeps_its_terms(
    name: str, tmp_path: Path, tinted_digits: Path
) -> None:
    spec = METHODS.get(name)
    cfg = smoke_config(name, tinted_digits)
    metrics = Trainer(cfg, tmp_path / "run", progress=False).fit().metrics
    history = read_history(tmp_path / "run")
    assert len(history) == spec.smoke.epochs
    for record in history:
        assert all(math.isfinite(v) for k, v in record.items() if isinstance(v, float)), record
    # metrics.json: the method's own terms, every one of them, and no other method's.
    assert set(metrics) - SHARED_METRICS <= set(spec.terms), sorted(set(metrics) - SHARED_METRICS - set(spec.terms))
    assert set(spec.terms) <= set(metrics), sorted(set(spec.terms) - set(metrics))
    for curve in spec.curves:  # the report draws them: each key is in the history
        assert set(curve.keys) <= set(history[-1]), (curve.title, sorted(set(curve.keys) - set(history[-1])))
    reached = metrics[spec.smoke.metric]
    if spec.smoke.floor is Floor.UNTRAINED:
        floor = untrained_knn(cfg)[spec.smoke.metric]
        assert reached >= floor, f"{name}: {spec.smoke.metric} {reached:.4f} below the untrained encoder's {floor:.4f}"
    elif spec.smoke.floor is Floor.RAW_PIXELS:
        floor = metrics["baseline_raw_knn_top1"]
        assert reached >= floor, f"{name}: {spec.smoke.metric} {reached:.4f} below raw pixels' {floor:.4f}"


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_RESUMES else name for name in NAMES]
)
def test_a_run_stopped_inside_an_epoch_and_resumed_ends_where_an_uninterrupted_run_does(
    name: str, tmp_path: Path, tinted_digits: Path
) -> None:
    from resume_check import assert_resumes_exactly

    # 320 images, 5 steps an epoch: the stop falls inside epoch 2 as on the whole set, at a fifth of its cost.
    cfg = smoke_config(
        name, tinted_digits, epochs=2, optim={"batch_size": 64}, log={"every_steps": 4}, data={"subset": 320}
    )
    steps = Trainer(cfg, tmp_path / "probe", progress=False).steps_per_epoch
    assert_resumes_exactly(cfg, tmp_path, stop_at_step=steps + 3)  # epoch 2, step 3: its sums and start are saved

    def history(run: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in record.items() if k != "seconds"} for record in read_history(tmp_path / run)]

    assert history("cut") == history("full")


def _global_batch(name: str, step: int, size: int = 8) -> Batch:
    """A fixed global batch of ``size`` images with two views each (a one-view method takes the first)."""
    channels = 3 if METHODS.get(name).colour_only else 1
    images = torch.rand(2 * size, channels, 8, 8, generator=torch.Generator().manual_seed(10 + step))
    return Batch(torch.arange(step * size, (step + 1) * size) % N, (images,), epoch=2, step=step)


def _rows(batch: Batch, views: int, rank: int, world: int) -> Batch:
    """This process's block of rows of each view of a global batch."""
    b = batch.size // world
    mine = slice(rank * b, (rank + 1) * b)
    groups = [group[: views * batch.size].view(views, batch.size, *group.shape[1:])[:, mine].reshape(-1, *group.shape[1:])
              for group in batch.groups]  # fmt: skip
    return Batch(batch.indices[mine], tuple(groups), batch.epoch, batch.step)


def _train_steps(rank: int, world: int, name: str, steps: int = 3) -> dict[str, torch.Tensor]:
    """``steps`` SGD steps of ``name`` on fixed global batches; this process takes its block of rows of each view.
    Returns the trained parameters (split ones gathered whole, on the main process)."""
    wrap = nn.parallel.DistributedDataParallel if world > 1 else None
    method = unit_method(name, distributed=world > 1, forward=wrap)
    method.on_epoch_start(2)
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    for step in range(steps):
        whole = _global_batch(name, step)
        images = whole.groups[0][: method.views * whole.size]
        batch = _rows(Batch(whole.indices, (images,), whole.epoch, whole.step), method.views, rank, world)
        torch.manual_seed(100 + step)
        out = method.training_step(batch)
        optimizer.zero_grad()
        out.loss.backward()
        method.before_optimizer_step()
        optimizer.step()
        method.after_step([out])
    trained = {key for key, p in method.named_parameters() if p.requires_grad}
    state = method.state_dict()  # a collective for split parameters: whole on the main process
    return {key: value.detach().clone() for key, value in state.items() if key in trained}


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in NAMES if METHODS.get(n).torchrun is not Torchrun.REFUSED])
def test_two_processes_train_the_weights_of_one(name: str, tmp_path: Path) -> None:
    results = run_gloo(_train_steps, 2, tmp_path, name)
    split = {key for key, value in results[0].items() if value.shape != results[1][key].shape}
    for key in results[0].keys() - split:  # every process holds the same weights
        assert torch.allclose(results[0][key], results[1][key], atol=1e-6), key
    if METHODS.get(name).torchrun is Torchrun.EXACT:
        single = _train_steps(0, 1, name)
        assert single.keys() == results[0].keys()
        for key, value in single.items():
            assert torch.allclose(results[0][key].float(), value.float(), atol=2e-5), key


def _state(method: Method) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in method.state_dict().items()}


@pytest.mark.parametrize("name", NAMES)
def test_two_training_steps_before_one_optimiser_step_lose_no_update(name: str) -> None:
    """Gradient accumulation: ``after_step`` gets both outputs and applies both updates. When the two steps leave
    different updates, the state after applying both must differ from the state after applying either one alone."""
    method = unit_method(name)
    models = [method, copy.deepcopy(method), copy.deepcopy(method)]
    outputs = []
    for model in models:
        torch.manual_seed(7)
        chunks = [_rows(_global_batch(name, s), model.views, 0, 1) for s in (0, 1)]
        first, second = (Batch(c.indices, c.groups, c.epoch, step=0) for c in chunks)  # one optimiser step's chunks
        outputs.append((model.training_step(first), model.training_step(second)))
    (a1, a2), (b1, _), (_, c2) = outputs
    models[0].after_step([a1, a2])
    models[1].after_step([b1])
    models[2].after_step([c2])
    both, first_only, second_only = (_state(model) for model in models)

    def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
        return all(torch.equal(a[k], b[k]) for k in a)

    if same(first_only, second_only):
        return  # the steps leave nothing of their own to apply (BYOL: the target's momentum is per optimiser step)
    assert not same(both, first_only), "the second step's update was lost"
    assert not same(both, second_only), "the first step's update was lost"


@pytest.mark.parametrize("name", [n for n in NAMES if METHODS.get(n).accumulation is Accumulation.EXACT])
def test_two_chunks_accumulate_the_loss_and_gradients_of_one_batch(name: str) -> None:
    """Where a spec claims accumulation exact: two chunks of B images, each loss halved, give the loss and the
    gradients of one batch of 2B (BatchNorm in eval mode: its statistics would be each chunk's)."""
    whole = unit_method(name)
    whole.on_epoch_start(2)
    chunked = copy.deepcopy(whole)
    batch = _rows(_global_batch(name, 0, size=8), whole.views, 0, 1)
    torch.manual_seed(7)
    out = whole.training_step(batch)
    out.loss.backward()
    torch.manual_seed(7)
    losses = []
    for i in range(2):
        part = chunked.training_step(_rows(batch, chunked.views, i, 2))
        (part.loss / 2).backward()
        losses.append(part.loss.detach())
    torch.testing.assert_close(sum(losses) / 2, out.loss.detach(), rtol=1e-5, atol=1e-6)
    grads = {k: p.grad for k, p in whole.named_parameters() if p.grad is not None}
    assert grads, "no gradient reached the parameters"
    for key, param in chunked.named_parameters():
        if key in grads:
            torch.testing.assert_close(param.grad, grads[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("name", [n for n in NAMES if METHODS.get(n).accumulation is Accumulation.REFUSED])
def test_accumulation_is_refused_with_one_line_where_the_loss_needs_the_whole_batch(name: str, tmp_path: Path) -> None:
    from invprop.errors import ConfigError

    with pytest.raises(ConfigError, match=f"method {name} does not accumulate gradients .*optim.accumulate=1"):
        Trainer(smoke_config(name, optim={"accumulate": 2}), tmp_path / "run", progress=False)
