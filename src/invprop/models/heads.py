"""Projection heads, registered by name: backbone features -> embedding (un-normalised).

``linear`` and ``mlp`` are the two heads of InvP's paper and its authors' code (Wang et al., 2020): the ablations
(Table 5) use the linear head with tau 0.07, the main results the MLP head with tau 0.2. ``mlp_bn`` adds a
BatchNorm after the hidden layer (as in SimCLR v2 and MoCo v3 heads); it is not the authors' head.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from invprop.registry import Registry

HEADS: Registry[Callable[..., nn.Module]] = Registry("head")


#: The head that is none (:func:`identity_head`).
IDENTITY = "identity"


@HEADS.register(IDENTITY)
def identity_head(in_dim: int, out_dim: int = 128, hidden_dim: int | None = None) -> nn.Module:
    """No head: the embedding is the backbone's feature (an off-the-shelf encoder measured as it is; a training
    method that trains its head refuses it)."""
    return nn.Identity()


@HEADS.register("linear")
def linear_head(in_dim: int, out_dim: int = 128, hidden_dim: int | None = None) -> nn.Module:
    """A single linear layer (the paper's "linear head", used with tau 0.07)."""
    return nn.Linear(in_dim, out_dim)


@HEADS.register("mlp")
def mlp_head(in_dim: int, out_dim: int = 128, hidden_dim: int | None = None) -> nn.Module:
    """Linear -> ReLU -> Linear, the authors' MLP head (used with tau 0.2); hidden width defaults to ``in_dim``, as
    in their code."""
    hidden = hidden_dim or in_dim
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))


@HEADS.register("mlp_bn")
def mlp_bn_head(in_dim: int, out_dim: int = 128, hidden_dim: int | None = None) -> nn.Module:
    """Linear -> BatchNorm -> ReLU -> Linear (not the authors' head; a common variant, offered for comparison);
    hidden width defaults to ``in_dim``."""
    hidden = hidden_dim or in_dim
    return nn.Sequential(
        nn.Linear(in_dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
    )


@HEADS.register("mlp3_bn")
def mlp3_bn_head(in_dim: int, out_dim: int = 128, hidden_dim: int | None = None) -> nn.Module:
    """Three layers, (Linear -> BatchNorm -> ReLU) x 2 -> Linear: the projector of Barlow Twins and the expander of
    VICReg (8192 wide on ImageNet; 2048 in solo-learn's CIFAR configs); hidden width defaults to ``in_dim``."""
    hidden = hidden_dim or in_dim
    return nn.Sequential(
        nn.Linear(in_dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, out_dim),
    )  # fmt: skip


@HEADS.register("mlp3_bn_out")
def mlp3_bn_out_head(in_dim: int, out_dim: int = 128, hidden_dim: int | None = None) -> nn.Module:
    """:func:`mlp3_bn_head` with a BatchNorm on the output too: SimSiam's projector (Chen & He, 2021, Sec. 3) and
    NNCLR's (Dwibedi et al., 2021, Sec. 4)."""
    return nn.Sequential(mlp3_bn_head(in_dim, out_dim, hidden_dim), nn.BatchNorm1d(out_dim))


def standardised_mlp(layers: int, in_dim: int, hidden: int, out_dim: int, last_bn: bool = True) -> nn.Sequential:
    """MoCo v3's MLPs (Chen, Xie & He, 2021, the authors' ``_build_mlp``): ``layers`` bias-free Linears, each hidden
    one followed by BatchNorm and ReLU, the last by a BatchNorm without scale or shift (``affine=False``: the output
    standardised) when ``last_bn``.

    Example:
        >>> [type(m).__name__ for m in standardised_mlp(2, 8, 16, 4)]
        ['Linear', 'BatchNorm1d', 'ReLU', 'Linear', 'BatchNorm1d']
    """
    modules: list[nn.Module] = []
    for layer in range(layers):
        first = in_dim if layer == 0 else hidden
        last = layer == layers - 1
        modules.append(nn.Linear(first, out_dim if last else hidden, bias=False))
        if not last:
            modules += [nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
        elif last_bn:
            modules.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*modules)


@HEADS.register("mlp_bn_std_out")
def mlp_bn_std_out_head(in_dim: int, out_dim: int = 256, hidden_dim: int | None = None) -> nn.Module:
    """MoCo v3's ResNet projector (Chen, Xie & He, 2021): :func:`standardised_mlp` of two layers, ``in -> hidden ->
    out`` (2048 -> 4096 -> 256); hidden width defaults to ``in_dim``."""
    return standardised_mlp(2, in_dim, hidden_dim or in_dim, out_dim)


@HEADS.register("mlp3_bn_std_out")
def mlp3_bn_std_out_head(in_dim: int, out_dim: int = 256, hidden_dim: int | None = None) -> nn.Module:
    """MoCo v3's ViT projector (Chen, Xie & He, 2021): :func:`standardised_mlp` of three layers (d -> 4096 -> 4096
    -> 256); hidden width defaults to ``in_dim``."""
    return standardised_mlp(3, in_dim, hidden_dim or in_dim, out_dim)


#: The standard deviation of the truncated normal DINO's head starts from (Caron et al., 2021, the authors'
#: ``DINOHead._init_weights``: ``trunc_normal_(std=.02)``, biases 0).
DINO_INIT_STD = 0.02


@HEADS.register("mlp3_gelu")
def mlp3_gelu_head(in_dim: int, out_dim: int = 256, hidden_dim: int | None = None) -> nn.Module:
    """DINO's head up to its bottleneck (Caron et al., 2021, the authors' ``DINOHead``, ``use_bn=False``,
    ``nlayers=3``): (Linear -> GELU) x 2 -> Linear, ``in -> hidden -> hidden -> out`` (2048, 2048, 256), weights from
    a truncated normal of std 0.02, biases 0; hidden width defaults to ``in_dim``. The method adds the L2
    normalisation and the weight-normalised prototype layer after it."""
    hidden = hidden_dim or in_dim
    head = nn.Sequential(
        nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, out_dim)
    )
    for layer in head:
        if isinstance(layer, nn.Linear):
            nn.init.trunc_normal_(layer.weight, std=DINO_INIT_STD)
            nn.init.zeros_(layer.bias)
    return head


@HEADS.register("mlp3_bn_gelu")
def mlp3_bn_gelu_head(in_dim: int, out_dim: int = 256, hidden_dim: int | None = None) -> nn.Module:
    """MSN's projection (Assran et al., 2022, the authors' ``deit.py`` ``fc`` with ``use_bn``): (Linear -> BatchNorm
    -> GELU) x 2 -> Linear, ``in -> hidden -> hidden -> out`` (2048, 2048, 256), weights from a truncated normal of
    std 0.02, biases 0; hidden width defaults to ``in_dim``."""
    hidden = hidden_dim or in_dim
    head = nn.Sequential(
        nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.GELU(),
        nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.GELU(),
        nn.Linear(hidden, out_dim),
    )  # fmt: skip
    for layer in head:
        if isinstance(layer, nn.Linear):
            nn.init.trunc_normal_(layer.weight, std=DINO_INIT_STD)
            nn.init.zeros_(layer.bias)
    return head


def predictor(dim: int, hidden_dim: int, out_dim: int | None = None) -> nn.Module:
    """The predictor of BYOL, SimSiam and NNCLR: Linear -> BatchNorm -> ReLU -> Linear, ``dim -> hidden -> out``
    (BYOL: 256 -> 4096 -> 256; SimSiam: 2048 -> 512 -> 2048, a bottleneck; NNCLR: 256 -> 4096 -> 256)."""
    return mlp_bn_head(dim, out_dim or dim, hidden_dim)


@HEADS.register("mlp3_bn_scaled")
def mlp3_bn_scaled_head(in_dim: int, out_dim: int = 128, hidden_dim: int | None = None) -> nn.Module:
    """SimCLRv2's projector (Chen et al., 2020b; the authors' tf2 ``ProjectionHead``): (Linear -> BatchNorm -> ReLU)
    x 2, then a Linear without bias and a BatchNorm that scales but does not shift (no bias anywhere in the last
    layer, whose output is compared by cosine); hidden width defaults to ``in_dim``."""
    hidden = hidden_dim or in_dim
    return nn.Sequential(
        nn.Linear(in_dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, out_dim, bias=False), ScaleOnlyBatchNorm(out_dim),
    )  # fmt: skip


class ScaleOnlyBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d with a learnable scale and no shift (TensorFlow's ``center=False``)."""

    def __init__(self, features: int) -> None:
        super().__init__(features)
        self.bias.requires_grad_(False)  # stays at its initial 0

    def reset_parameters(self) -> None:
        super().reset_parameters()
        nn.init.zeros_(self.bias)


def _leaves(module: nn.Module) -> list[nn.Module]:
    """The modules of nested Sequentials in forward order (any other module is a leaf)."""
    if isinstance(module, nn.Sequential):
        return [leaf for child in module for leaf in _leaves(child)]
    return [module]


def head_layers(head: nn.Module) -> list[nn.Sequential]:
    """A head's layers in order, each a Linear with the BatchNorm, ReLU and other modules after it up to the next
    Linear: ``mlp3_bn_out`` has three (Linear-BN-ReLU, Linear-BN-ReLU, Linear-BN); ``linear`` one. The layers share
    the head's modules (no copy).

    Example:
        >>> [len(layer) for layer in head_layers(HEADS.get("mlp3_bn_out")(8, 4))]
        [3, 3, 2]
    """
    layers: list[list[nn.Module]] = []
    for leaf in _leaves(head):
        if isinstance(leaf, nn.Linear) or not layers:
            layers.append([leaf])
        else:
            layers[-1].append(leaf)
    return [nn.Sequential(*layer) for layer in layers]


def layer_width(layer: nn.Sequential) -> int:
    """The output width of one of :func:`head_layers`'s layers (its Linear's)."""
    return int(next(m for m in layer if isinstance(m, nn.Linear)).out_features)
