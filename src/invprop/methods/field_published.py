"""The field's methods (SimCLR, MoCo v2, BYOL, SimSiam, Barlow Twins, VICReg, NNCLR, PIRL; RotNet, Jigsaw, SwAV,
DeepCluster, PCL, colorization): their per-dataset defaults,
the published value of each of their own settings, and why a default differs from it.

Sources: the papers, their authors' code where a paper gives no value, and solo-learn's CIFAR recipes
(``scripts/pretrain/cifar/<method>.yaml``, facts only) for CIFAR-sized data. The projector and predictor widths
are scaled down with the backbone on digits (a 256-wide network). Optimisation stays the dataset preset's (SGD and
its learning rate, as for InvP): the papers' LARS and their large-batch learning rates do not carry over to SGD at
batch 128.
"""

from __future__ import annotations

from typing import Any

from invprop.settings import Reference

_SOLO = "solo-learn's CIFAR recipe (scripts/pretrain/cifar/{}.yaml)"
_DIGITS_WIDTH = "scaled down with the 256-wide digits network"

#: Per method, per dataset preset: the method's defaults (its own section and its projector, ``model.*``).
FIELD_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "simclr": {
        "digits": {"model": {"head": "mlp_bn"}},
        "cifar10": {"model": {"head": "mlp", "hidden_dim": 2048, "embedding_dim": 256}},
    },
    "moco": {
        "digits": {"model": {"head": "mlp"}, "moco": {"queue_size": 1024}},
        "cifar10": {"model": {"head": "mlp", "hidden_dim": 2048, "embedding_dim": 256}, "moco": {"queue_size": 16384}},
    },
    "byol": {
        "digits": {"model": {"head": "mlp_bn", "hidden_dim": 1024, "embedding_dim": 128}, "byol": {"predictor_hidden_dim": 1024}},
        "cifar10": {"model": {"head": "mlp_bn", "hidden_dim": 4096, "embedding_dim": 256}},
    },
    "simsiam": {
        "digits": {"model": {"head": "mlp3_bn_out", "hidden_dim": 256, "embedding_dim": 256}, "simsiam": {"predictor_hidden_dim": 64}},
        "cifar10": {"model": {"head": "mlp3_bn_out", "hidden_dim": 2048, "embedding_dim": 2048}},
    },
    "barlowtwins": {
        "digits": {"model": {"head": "mlp3_bn", "hidden_dim": 512, "embedding_dim": 512}},
        "cifar10": {"model": {"head": "mlp3_bn", "hidden_dim": 2048, "embedding_dim": 2048}},
    },
    "vicreg": {
        "digits": {"model": {"head": "mlp3_bn", "hidden_dim": 512, "embedding_dim": 512}},
        "cifar10": {"model": {"head": "mlp3_bn", "hidden_dim": 2048, "embedding_dim": 2048}},
    },
    "nnclr": {
        "digits": {"model": {"head": "mlp3_bn_out", "hidden_dim": 512, "embedding_dim": 128}, "nnclr": {"queue_size": 1024, "predictor_hidden_dim": 1024}},
        "cifar10": {"model": {"head": "mlp3_bn_out", "hidden_dim": 2048, "embedding_dim": 256}, "nnclr": {"queue_size": 16384}},
    },
    "rotnet": {},
    "colorization": {"cifar10": {"model": {"head": "mlp_bn", "embedding_dim": 256}}},
    "jigsaw": {"cifar10": {"jigsaw": {"tile_size": 16}}},
    "deepcluster": {"digits": {"deepcluster": {"clusters": 30}}, "cifar10": {"deepcluster": {"clusters": 500}}},
    "pcl": {
        "digits": {"model": {"head": "mlp"}, "pcl": {"queue_size": 1024, "clusters": [25, 50, 100], "warmup_epochs": 10}},
        "cifar10": {"model": {"head": "mlp", "hidden_dim": 2048, "embedding_dim": 128},
                    "pcl": {"clusters": [250, 500, 1000]}},
    },
    "swav": {
        "digits": {"model": {"head": "mlp_bn"}, "swav": {"prototypes": 30}},
        "cifar10": {"model": {"head": "mlp_bn", "hidden_dim": 2048, "embedding_dim": 128},
                    "swav": {"queue_size": 3840, "queue_start_epoch": 50, "freeze_prototypes_epochs": 2}},
    },
    "pirl": {
        "digits": {"model": {"head": "linear"}, "pirl": {"negatives": 1024}},
        "cifar10": {"model": {"head": "linear"}, "pirl": {"negatives": 4096, "tile_size": 16}},
    },
}  # fmt: skip

#: Published values of each method's own settings.
FIELD_REFERENCES: dict[str, dict[str, dict[str, Reference]]] = {
    "swav": {
        "*": {
            "swav.prototypes": Reference(3000, "Caron et al. (2020), Sec. 4 (ImageNet)"),
            "swav.temperature": Reference(0.1, "Caron et al. (2020), App. A.1"),
            "swav.epsilon": Reference(0.05, "Caron et al. (2020), App. A.1"),
            "swav.sinkhorn_iterations": Reference(3, "Caron et al. (2020), Sec. 3.1"),
            "swav.freeze_prototypes_epochs": Reference(1, "Caron et al. (2020), App. A.1 (the first epoch)"),
            "swav.queue_size": Reference(3840, "the authors' code, small-batch setting (batch 256)"),
            "swav.queue_start_epoch": Reference(15, "the authors' code, small-batch setting"),
            "data.small_crops": Reference(6, "Caron et al. (2020), Sec. 4 (2 x 224 + 6 x 96 on ImageNet)"),
        },
    },
    "rotnet": {},
    "colorization": {"*": {"colorization.downsample": Reference(4, "Zhang et al. (2016), Fig. 2 (224 -> 56)")}},
    "pcl": {
        "*": {
            "pcl.temperature": Reference(0.2, "Li et al. (2021), Sec. 4 (MoCo v2's)"),
            "pcl.queue_size": Reference(16384, "Li et al. (2021), Sec. 4"),
            "pcl.momentum": Reference(0.999, "Li et al. (2021), Sec. 4 (MoCo's)"),
            "pcl.clusters": Reference([25000, 50000, 100000], "Li et al. (2021), Sec. 4 (ImageNet)"),
            "pcl.warmup_epochs": Reference(20, "Li et al. (2021), Sec. 4 (of 200)"),
            "pcl.negative_prototypes": Reference(16000, "Li et al. (2021), Sec. 3.2 (r)"),
        },
    },
    "deepcluster": {
        "*": {
            "deepcluster.clusters": Reference(10000, "Caron et al. (2018), Sec. 4 (ImageNet)"),
            "deepcluster.pca_dim": Reference(256, "Caron et al. (2018), Sec. 3.3"),
            "deepcluster.kmeans_iterations": Reference(20, "the authors' code (FAISS k-means, 20 iterations)"),
            "deepcluster.balanced_sampling": Reference(True, "Caron et al. (2018), Sec. 3.3"),
        },
    },
    "jigsaw": {
        "*": {
            "jigsaw.grid": Reference(3, "Noroozi & Favaro (2016), Sec. 3 (3 x 3 tiles)"),
            "jigsaw.permutations": Reference(1000, "Noroozi & Favaro (2016), Sec. 3.2 (the set of the main results)"),
            "jigsaw.hidden_dim": Reference(4096, "Noroozi & Favaro (2016), Fig. 3 (fc7)"),
            "jigsaw.tile_share": Reference(64 / 75, "Noroozi & Favaro (2016), Sec. 3 (64x64 tiles in 75x75 cells)"),
            "jigsaw.normalise_tiles": Reference(True, "Noroozi & Favaro (2016), Sec. 3 (against shortcuts)"),
        },
    },
    "simclr": {
        "*": {"simclr.temperature": Reference(0.1, "Chen et al. (2020), Sec. 5 (ImageNet, large batches)")},
        "cifar10": {"simclr.temperature": Reference(0.5, "Chen et al. (2020), App. B.9 (CIFAR-10)")},
    },
    "moco": {
        "*": {
            "moco.temperature": Reference(0.2, "Chen et al. (2020), MoCo v2, Sec. 2"),
            "moco.queue_size": Reference(65536, "He et al. (2020), MoCo, Sec. 4 (ImageNet)"),
            "moco.base_momentum": Reference(0.999, "He et al. (2020), MoCo, Sec. 3.2 (fixed)"),
            "moco.final_momentum": Reference(0.999, "He et al. (2020), MoCo, Sec. 3.2 (fixed)"),
            "moco.symmetric": Reference(False, "He et al. (2020), MoCo, Alg. 1 (one direction)"),
        },
    },
    "byol": {
        "*": {
            "byol.base_momentum": Reference(0.996, "Grill et al. (2020), Sec. 3.2"),
            "byol.final_momentum": Reference(1.0, "Grill et al. (2020), Sec. 3.2"),
            "byol.predictor_hidden_dim": Reference(4096, "Grill et al. (2020), Sec. 3.3"),
        },
    },
    "simsiam": {"*": {"simsiam.predictor_hidden_dim": Reference(512, "Chen & He (2021), Sec. 3 (2048 -> 512 -> 2048)")}},
    "barlowtwins": {
        "*": {
            "barlowtwins.off_diagonal_weight": Reference(0.0051, "Zbontar et al. (2021), the authors' code (lambd)"),
            "barlowtwins.scale": Reference(1.0, "Zbontar et al. (2021), Eq. 1 (no factor)"),
        },
    },
    "vicreg": {
        "*": {
            "vicreg.invariance_weight": Reference(25.0, "Bardes et al. (2022), Sec. 4.2"),
            "vicreg.variance_weight": Reference(25.0, "Bardes et al. (2022), Sec. 4.2"),
            "vicreg.covariance_weight": Reference(1.0, "Bardes et al. (2022), Sec. 4.2"),
            "vicreg.target_std": Reference(1.0, "Bardes et al. (2022), Eq. 1"),
        },
    },
    "nnclr": {
        "*": {
            "nnclr.temperature": Reference(0.1, "Dwibedi et al. (2021), Sec. 4"),
            "nnclr.queue_size": Reference(98304, "Dwibedi et al. (2021), Sec. 4 (ImageNet)"),
            "nnclr.predictor_hidden_dim": Reference(4096, "Dwibedi et al. (2021), Sec. 4"),
        },
    },
    "pirl": {
        "*": {
            "pirl.temperature": Reference(0.07, "Misra & van der Maaten (2020), Sec. 4"),
            "pirl.negatives": Reference(32000, "Misra & van der Maaten (2020), Sec. 4"),
            "pirl.weight": Reference(0.5, "Misra & van der Maaten (2020), Sec. 3.2"),
            "pirl.bank_momentum": Reference(0.5, "Misra & van der Maaten (2020), Sec. 3.2"),
            "pirl.grid": Reference(3, "Misra & van der Maaten (2020), Sec. 3 (3 x 3 jigsaw)"),
            "pirl.normaliser": Reference("first_step", "Wu et al. (2018), Sec. 3.2, whose NCE PIRL uses: Z fixed"),
        },
    },
}  # fmt: skip

_QUEUE_DIGITS = "below the 1,347 digits training images (a larger queue would hold an image's own earlier keys)"
_QUEUE_CIFAR = "below CIFAR-10's 50,000 training images (solo-learn's CIFAR recipes use 32,768 and 65,536)"

#: Why a default differs from its reference.
FIELD_DEVIATIONS: dict[str, dict[str, dict[str, str]]] = {
    "swav": {
        "*": {
            "swav.queue_size": "off unless asked for: a queue only helps once it is full, and the right size depends on "
            "the batch and the dataset",
            "data.small_crops": "multi-crop is opt-in (data.small_crops); the two full-size views are SwAV's baseline "
            "setting (Caron et al., 2020, Table 3)",
        },
        "digits": {
            "swav.prototypes": "3 per class of the 10 digits: 3000 prototypes for 1,347 images leave most unused"
        },
        "cifar10": {
            "swav.freeze_prototypes_epochs": f"{_SOLO.format('swav')}",
            "swav.queue_start_epoch": f"{_SOLO.format('swav')} (its schedules are 1000 epochs)",
            "data.small_crops": f"{_SOLO.format('swav')} trains CIFAR with the two 32-pixel views",
        },
    },
    "rotnet": {},
    "colorization": {},
    "pcl": {
        "digits": {
            "pcl.queue_size": _QUEUE_DIGITS,
            "pcl.clusters": "the paper's about 50, 25 and 13 images per cluster, for 1,347 images",
            "pcl.warmup_epochs": "the paper's 10% of the schedule (100 epochs on digits)",
        },
        "cifar10": {
            "pcl.clusters": "the paper's images per cluster, roughly, for CIFAR-10's 50,000 images (it has 1.28 M)",
        },
    },
    "deepcluster": {
        "digits": {
            "deepcluster.clusters": "3 per class of the 10 digits (the paper: about 130 images per cluster; "
            "1,347 images cannot fill 10,000)"
        },
        "cifar10": {
            "deepcluster.clusters": "about 100 images per cluster of CIFAR-10's 50,000 (the paper: 10,000 "
            "for 1.3 M ImageNet images, and over-clustering helps); not tuned here"
        },
    },
    "jigsaw": {
        "*": {
            "jigsaw.permutations": "fewer classes for datasets of thousands of images, and a set chosen in seconds "
            "(about 50 ms per permutation of 9 tiles on a CPU); the paper compares several set sizes",
            "jigsaw.hidden_dim": "scaled down with the small backbones (256 to 512 features per tile)",
        },
    },
    "simclr": {
        "*": {
            "simclr.temperature": f"{_SOLO.format('simclr')} uses 0.2 for small images and batches; not measured here"
        },
        "cifar10": {"simclr.temperature": f"{_SOLO.format('simclr')} uses 0.2; not measured here against 0.5"},
    },
    "moco": {
        "*": {
            "moco.base_momentum": f"{_SOLO.format('mocov2plus')}: 0.99 rising to 0.999 (short schedules on small data)",
            "moco.symmetric": f"{_SOLO.format('mocov2plus')} ('MoCo v2+'): the symmetric loss",
            "moco.queue_size": "4096 for datasets of a few tens of thousands of images; presets adapt it",
        },
        "digits": {"moco.queue_size": _QUEUE_DIGITS},
        "cifar10": {"moco.queue_size": _QUEUE_CIFAR},
    },
    "byol": {
        "*": {"byol.base_momentum": f"{_SOLO.format('byol')}: 0.99 for CIFAR-sized data and short schedules"},
        "digits": {"byol.predictor_hidden_dim": _DIGITS_WIDTH},
    },
    "simsiam": {"digits": {"simsiam.predictor_hidden_dim": f"{_DIGITS_WIDTH} (the paper's 1/4 bottleneck of 256)"}},
    "barlowtwins": {
        "*": {"barlowtwins.scale": f"{_SOLO.format('barlow')}: scale_loss 0.1 with its 2048-wide projector"}
    },
    "vicreg": {},
    "nnclr": {
        "*": {"nnclr.queue_size": "4096 for datasets of a few tens of thousands of images; presets adapt it"},
        "digits": {"nnclr.queue_size": _QUEUE_DIGITS, "nnclr.predictor_hidden_dim": _DIGITS_WIDTH},
        "cifar10": {"nnclr.queue_size": _QUEUE_CIFAR},
    },
    "pirl": {
        "*": {
            "pirl.normaliser": "measured on digits (docs/results.md): Z fixed after the first step, made while the bank "
            "holds random rows, let the loss explode (held-out kNN top-1 0.31 after 100 epochs, below the untrained "
            "encoder); re-estimated at every step, 0.97 after 20 epochs",
        },
        "digits": {"pirl.negatives": "below the 1,347 digits training images (drawn with replacement)"},
        "cifar10": {"pirl.negatives": "fewer draws per step on a CPU; not measured against 32,000"},
    },
}

__all__ = ["FIELD_DEVIATIONS", "FIELD_PRESETS", "FIELD_REFERENCES"]
