"""``invprop embed`` and ``invprop neighbors``: embeddings of a dataset's images, and nearest-image search."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn

from invprop.data import IndexedDataset
from invprop.data.image_sequences import ImageFiles
from invprop.engine.monitor import extract
from invprop.errors import ConfigError, DataError
from invprop.evaluation.loading import EvalContext, load_eval_context
from invprop.files import make_folder, write_atomically

SPLITS = ("train", "test")


def _split(ctx: EvalContext, split: str) -> IndexedDataset:
    """The non-augmented images of ``split`` (``train`` with the eval transform, not the training augmentation)."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    dataset = ctx.splits.train_plain if split == "train" else ctx.splits.test
    if dataset is None:
        raise DataError(f"dataset {ctx.dataset!r} has no {split} split")
    return dataset


def file_paths(dataset: IndexedDataset) -> list[str] | None:
    """The image files behind ``dataset``, when it reads files."""
    source = dataset.source
    return [str(p) for p in source.files] if isinstance(source, ImageFiles) else None


@dataclass
class Embeddings:
    """Embeddings of one split: ``embeddings`` (head, L2-normalised), ``features`` (backbone), labels, paths."""

    embeddings: Tensor
    features: Tensor
    labels: Tensor
    paths: list[str] | None


def embed_split(ctx: EvalContext, split: str = "train") -> Embeddings:
    dataset = _split(ctx, split)
    out = extract(ctx.encoder, dataset, ctx.device, ctx.cfg.data.num_workers)
    return Embeddings(nn.functional.normalize(out.embeddings, dim=1), out.features, out.labels, file_paths(dataset))


def write_embeddings(result: Embeddings, out: Path) -> Path:
    """Write ``.npz`` (embeddings, features, indices, labels, paths when known) atomically; returns the path."""
    if out.suffix != ".npz":
        out = out.with_suffix(out.suffix + ".npz") if out.suffix else out.with_suffix(".npz")
    make_folder(out.parent)
    arrays: dict[str, np.ndarray] = {
        "embeddings": result.embeddings.numpy(),
        "features": result.features.numpy(),
        "indices": np.arange(result.embeddings.shape[0]),
        "labels": result.labels.numpy(),
    }
    if result.paths is not None:
        arrays["paths"] = np.asarray(result.paths)
    return write_atomically(out, lambda handle: np.savez(handle, **arrays))  # type: ignore[arg-type]


def embed(
    checkpoint: Path, dataset: str | None, split: str, out: Path, overrides: dict[str, Any] | None = None
) -> Path:
    """``invprop embed``: embeddings of ``split`` of ``dataset`` (default: the training dataset) into ``out``."""
    ctx = load_eval_context(checkpoint, dataset, overrides, require_labels=False)
    return write_embeddings(embed_split(ctx, split), out)


def _query_embedding(ctx: EvalContext, reference: IndexedDataset, query: str) -> tuple[Tensor, int | None, Tensor]:
    """The embedding of ``query`` (an index into ``reference`` or an image file), its index when it is one, and the
    image the encoder saw."""
    if query.lstrip("-").isdigit():
        index = int(query)
        if not 0 <= index < len(reference):
            raise ConfigError(f"--query index {index} is outside the split (0..{len(reference) - 1})")
        _, image, _ = reference[index]
        found: int | None = index
    else:
        path = Path(query).expanduser()
        if not path.is_file():
            raise ConfigError(f"--query {query!r} is neither an index nor an image file")
        try:
            with Image.open(path) as img:
                picture = img.convert("RGB" if ctx.splits.in_channels == 3 else "L")
        except Image.DecompressionBombError:
            raise DataError(
                f"{path} is too large an image to decode safely (Pillow's guard against decompression bombs); "
                "resize it first"
            ) from None
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"cannot read {path} as an image ({err})") from None
        pixels = TF.to_tensor(picture)
        side = reference[0][1].shape[-2:]
        if tuple(pixels.shape[-2:]) != tuple(side):
            pixels = TF.center_crop(TF.resize(pixels, min(side), antialias=True), list(side))
        image, found = reference.transform(pixels), None
    with torch.no_grad():
        emb = ctx.encoder(image.unsqueeze(0).to(ctx.device)).float().cpu()
    return nn.functional.normalize(emb, dim=1)[0], found, image


def nearest_neighbors(
    checkpoint: Path,
    query: str,
    k: int = 10,
    dataset: str | None = None,
    split: str = "train",
    overrides: dict[str, Any] | None = None,
    render: Path | None = None,
) -> list[dict[str, Any]]:
    """The ``k`` images of ``split`` most similar (cosine, head embedding) to ``query``, most similar first.

    A query given as an index leaves that image itself out of the results. With ``render``, a PNG strip of the query
    and its neighbours is written there.
    """
    if k < 1:
        raise ConfigError(f"-k must be at least 1, got {k}")
    ctx = load_eval_context(checkpoint, dataset, overrides, require_labels=False)
    result = embed_split(ctx, split)
    reference = _split(ctx, split)
    q, own, query_image = _query_embedding(ctx, reference, query)
    sims = result.embeddings @ q
    if own is not None:
        sims[own] = float("-inf")
    top = sims.topk(min(k, sims.numel() - (own is not None)))
    rows = []
    for rank, (sim, index) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
        row: dict[str, Any] = {"rank": rank, "index": index, "similarity": sim, "label": int(result.labels[index])}
        if result.paths is not None:
            row["path"] = result.paths[index]
        rows.append(row)
    if render is not None:
        render_neighbors(reference, rows, render, query_image)
    return rows


def render_neighbors(reference: IndexedDataset, rows: list[dict[str, Any]], out: Path, query_image: Tensor) -> Path:
    """A PNG strip: the query, then each neighbour with its similarity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def picture(x: Tensor) -> Any:
        x = (x - x.min()) / (x.max() - x.min() + 1e-8)
        return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()

    fig, axes = plt.subplots(1, len(rows) + 1, figsize=(1.3 * (len(rows) + 1), 1.6), squeeze=False)
    axes[0][0].imshow(picture(query_image), cmap="gray")
    axes[0][0].set_title("query", fontsize=8)
    for ax, row in zip(axes[0][1:], rows):
        ax.imshow(picture(reference[row["index"]][1]), cmap="gray")
        ax.set_title(f"{row['similarity']:.2f}", fontsize=8)
    for ax in axes[0]:
        ax.axis("off")
    write_atomically(out, lambda handle: fig.savefig(handle, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)
    return out
