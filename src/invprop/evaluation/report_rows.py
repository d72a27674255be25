"""The report's figures of images a trained method makes (:class:`invprop.methods.ImageRows`): e.g. a denoising
autoencoder's inputs, their corrupted copies and its reconstructions. The method is rebuilt from the run's
checkpoint and run in eval mode on the same query images as the neighbour grids."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from invprop.config import build_method  # noqa: E402
from invprop.evaluation.loading import EvalContext  # noqa: E402
from invprop.evaluation.report_pictures import QUERIES, query_indices  # noqa: E402
from invprop.methods import ImageRows  # noqa: E402


def rows_figure(rows: Sequence[tuple[str, Tensor]], title: str) -> plt.Figure:
    """One row per caption, one column per image; images (B, C, H, W) in [0, 1], C 1 or 3."""
    cols = max(int(images.shape[0]) for _, images in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(0.9 * cols + 1.4, 0.95 * len(rows) + 0.4), squeeze=False,
                             layout="constrained")  # fmt: skip
    for ax_row, (caption, images) in zip(axes, rows):
        for col, ax in enumerate(ax_row):
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col < images.shape[0]:
                ax.imshow(_picture(images[col]), cmap="gray", vmin=0.0, vmax=1.0)
        ax_row[0].set_ylabel(caption, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=9)
    return fig


def _picture(image: Tensor) -> np.ndarray:
    x = image.detach().float().clamp(0, 1).cpu()
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def method_rows(ctx: EvalContext, state: Mapping[str, Tensor]) -> list[tuple[ImageRows, list[tuple[str, Tensor]]]]:
    """Each :class:`ImageRows` figure of the run's method, rebuilt with the checkpoint's model ``state``, with its
    rows computed on the report's query images (none for a method that declares none)."""
    spec = ctx.cfg.spec
    dataset = ctx.splits.train_plain
    if not spec.image_rows or ctx.checkpoint is None or dataset is None:
        return []
    splits = ctx.splits
    method = build_method(ctx.cfg, ctx.encoder, len(dataset), in_channels=splits.in_channels, mean=tuple(splits.mean),
                          std=tuple(splits.std), image_size=splits.image_size)  # fmt: skip
    method.load_state_dict(state)
    method.to(ctx.device).eval()
    indices = query_indices(QUERIES, len(dataset))
    images = torch.stack([dataset[int(i)][1] for i in indices]).to(ctx.device)
    devices = [ctx.device] if ctx.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():  # the caller's generators left as they were
        torch.manual_seed(0)  # the same corruptions for every report of the run
        return [(figure, list(figure.rows(method, images))) for figure in spec.image_rows]


__all__ = ["method_rows", "rows_figure"]
