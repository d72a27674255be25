"""``invprop export --format onnx``: a run's encoder as an ONNX graph that takes pixels.

The graph's input ``images`` is (N, C, H, W) float pixels in [0, 1], N free (a dynamic batch axis), H and W the side
the run trained at. The run's normalisation -- its data's per-channel mean and standard deviation -- is the graph's
first operation, so images go in as they are loaded. Two outputs: ``features`` (N, F), the backbone's pooled
features (what kNN, the linear probe and transfer read), and ``embedding`` (N, D), the head's output. On export the
graph is run under onnxruntime on random pixels at two batch sizes and both outputs must equal PyTorch's to
:data:`TOLERANCE` before it is written (an earlier export in its place is kept otherwise). Needs the optional extra: ``pip install 'invprop[onnx]'``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from invprop.config import Config, data_for, from_saved
from invprop.errors import ConfigError
from invprop.evaluation.loading import ENCODER_PREFIX
from invprop.files import write_atomically
from invprop.models import Encoder, encoder_from

#: The largest absolute difference allowed between onnxruntime's outputs and PyTorch's.
TOLERANCE = 1e-4
#: The batch sizes the exported graph is checked at (two: the batch axis must be free).
CHECK_BATCHES = (3, 8)
#: The packages the ONNX export needs (the ``onnx`` extra).
NEEDED = ("onnx", "onnxscript", "onnxruntime")
#: The opset of the exported graph.
OPSET = 18
#: The oldest torch whose exporter this uses (``torch.onnx.export(..., dynamo=True, dynamic_shapes=...)``).
MIN_TORCH = (2, 5)


class PixelEncoder(nn.Module):
    """An encoder behind its run's normalisation: pixels in [0, 1] -> (features, embedding)."""

    def __init__(self, encoder: Encoder, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.encoder = encoder
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.encoder.features((images - self.mean) / self.std)
        return features, self.encoder.head(features)


@dataclass(frozen=True)
class OnnxExport:
    """What was written: the file, the input it takes, and the largest difference to PyTorch measured on export."""

    path: Path
    channels: int
    side: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    largest_difference: float

    def instructions(self) -> str:
        """How to run it, in one line."""
        return (f"input 'images': (N, {self.channels}, {self.side}, {self.side}) float32 pixels in [0, 1], any N "
                f"(normalised inside the graph: mean {list(self.mean)}, std {list(self.std)}); outputs 'features' "
                f"(backbone) and 'embedding' (head); onnxruntime matched PyTorch to {self.largest_difference:.1e}")  # fmt: skip


def require_onnx() -> None:
    """A one-line error naming the extra when a package the export needs is missing, or torch is too old for its
    exporter."""
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"--format onnx needs {', '.join(missing)}: pip install 'invprop[onnx]'")
    if tuple(int(part) for part in torch.__version__.split(".")[:2]) < MIN_TORCH:
        raise ConfigError(f"--format onnx needs torch {'.'.join(map(str, MIN_TORCH))} or later (its dynamo exporter); "
                          f"this is {torch.__version__}: use --format safetensors, or upgrade torch")  # fmt: skip


def pixel_encoder(state: dict[str, Any]) -> tuple[PixelEncoder, Config, dict[str, Any]]:
    """The checkpoint's encoder (eval mode, CPU) behind its normalisation, its config, and its input's shape and
    normalisation (read from the data for checkpoints written before they were recorded)."""
    cfg = from_saved(state["config"], state["model"])
    shape = dict(state.get("input") or {})
    if not {"in_channels", "image_size", "mean", "std"} <= shape.keys() or shape["image_size"] is None:
        splits = data_for(cfg, subset=False)
        shape = {"in_channels": splits.in_channels, "image_size": splits.image_size, "mean": list(splits.mean),
                 "std": list(splits.std), **{k: v for k, v in shape.items() if v is not None}}  # fmt: skip
    channels, side = int(shape["in_channels"]), int(shape["image_size"])
    mean, std = [float(v) for v in shape["mean"]], [float(v) for v in shape["std"]]
    encoder = encoder_from(cfg.model, channels, side, (mean, std))
    weights = {k[len(ENCODER_PREFIX) :]: v for k, v in state["model"].items() if k.startswith(ENCODER_PREFIX)}
    encoder.load_state_dict(weights)
    return PixelEncoder(encoder, mean, std).eval(), cfg, {**shape, "in_channels": channels, "image_size": side}


def export_onnx(state: dict[str, Any], target: Path) -> OnnxExport:
    """Write the checkpoint ``state``'s encoder as ONNX to ``target``, after checking it under onnxruntime."""
    require_onnx()
    import onnxruntime

    model, _, shape = pixel_encoder(state)
    channels, side = shape["in_channels"], shape["image_size"]
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(CHECK_BATCHES[0], channels, side, side, generator=generator)
    batch = torch.export.Dim("batch", min=1)
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                model, (example,), None, input_names=["images"], output_names=["features", "embedding"],
                dynamic_shapes=({0: batch},), dynamo=True, opset_version=OPSET, verbose=False,
            )  # fmt: skip
        if program is None:
            raise RuntimeError("the exporter returned no program")
        graph = program.model_proto.SerializeToString()
    except Exception as err:  # the exporter's many failures: one line, and the format that always works
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ConfigError(f"this encoder cannot be exported to ONNX ({first}); use --format safetensors") from None
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])  # checked before it is kept
    largest = 0.0
    for size in CHECK_BATCHES:
        images = torch.rand(size, channels, side, side, generator=generator)
        with torch.no_grad():
            expected = [t.numpy() for t in model(images)]
        got = session.run(["features", "embedding"], {"images": images.numpy()})
        largest = max([largest, *(float(np.abs(g - e).max()) for g, e in zip(got, expected, strict=True))])
    if largest > TOLERANCE:
        raise ConfigError(f"the ONNX graph's outputs differ from PyTorch's by {largest:.2e} (> {TOLERANCE}); nothing "
                          "was written: use --format safetensors")  # fmt: skip
    written = write_atomically(target, lambda handle: handle.write(graph))
    mean, std = tuple(shape["mean"]), tuple(shape["std"])
    return OnnxExport(written, channels, side, mean, std, largest)


__all__ = ["CHECK_BATCHES", "OnnxExport", "PixelEncoder", "TOLERANCE", "export_onnx", "pixel_encoder", "require_onnx"]
