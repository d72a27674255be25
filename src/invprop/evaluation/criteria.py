"""The label-free criteria as ``compare`` ranks by them: each with its direction and source, registered by name, and
their agreement with labels on a table (Kendall's tau against kNN top-1).

A criterion reads each row's ``label_free`` scores (:mod:`invprop.evaluation.label_free`); CLID combines two of
them across the rows of the table. Each is registered twice: on the head embeddings (``rankme``) and on the
backbone features (``rankme_backbone``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from scipy.stats import kendalltau

from invprop.evaluation.label_free import BACKBONE
from invprop.registry import Registry

#: The key of the label-free scores in a row of the table.
SCORES_KEY = "label_free"
#: What a table ranks by when it has labels.
LABELLED_RANKING = "knn_top1"

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Criterion:
    """A label-free criterion of a compare table.

    Attributes:
        title: its name in tables.
        higher_is_better: the direction that ranks (None: a diagnostic with no direction of its own).
        source: the paper it is from.
        values: the criterion of each row (None where a row has no score).
    """

    title: str
    higher_is_better: bool | None
    source: str
    values: Callable[[Sequence[Row]], list[float | None]]


def _score(key: str) -> Callable[[Sequence[Row]], list[float | None]]:
    def values(rows: Sequence[Row]) -> list[float | None]:
        return [(row.get(SCORES_KEY) or {}).get(key) for row in rows]

    return values


def _standardised(values: list[float | None]) -> list[float | None]:
    present = [v for v in values if v is not None and math.isfinite(v)]
    if len(present) < 2:
        return [None] * len(values)
    mean, spread = statistics.fmean(present), statistics.pstdev(present)
    return [None if v is None or not math.isfinite(v) else (v - mean) / spread if spread else 0.0 for v in values]


def _clid(suffix: str) -> Callable[[Sequence[Row]], list[float | None]]:
    def values(rows: Sequence[Row]) -> list[float | None]:
        cl = _standardised(_score(f"cl{suffix}")(rows))
        dim = _standardised(_score(f"id{suffix}")(rows))
        return [None if a is None or b is None else a + b for a, b in zip(cl, dim)]

    return values


CRITERIA: Registry[Criterion] = Registry("label-free criterion")

_PLAIN = {  # name: (title, higher is better, source)
    "rankme": ("RankMe", True, "Garrido et al., ICML 2023"),
    "lidar": ("LiDAR", True, "Thilak et al., ICLR 2024"),
    "cl": ("cluster learnability", True, "Lu et al., TMLR 2023"),
    "id": ("intrinsic dimension", None, "TwoNN, Facco et al., 2017"),
    "alignment": ("alignment", False, "Wang & Isola, ICML 2020"),
    "uniformity": ("uniformity", False, "Wang & Isola, ICML 2020"),
}
for _suffix, _where in (("", "head"), (BACKBONE, "backbone")):
    for _name, (_title, _higher, _source) in _PLAIN.items():
        CRITERIA.register(f"{_name}{_suffix}")(
            Criterion(f"{_title} ({_where})", _higher, _source, _score(f"{_name}{_suffix}"))
        )
    CRITERIA.register(f"clid{_suffix}")(
        Criterion(f"CLID ({_where})", True, "Lu et al., TMLR 2023: CL + ID, each standardised over the table's rows",
                  _clid(_suffix))
    )  # fmt: skip


@dataclass(frozen=True)
class Agreement:
    """How well the default criterion agreed with labels where they were known (docs/results.md, "Ranking without
    labels"): the value an unlabelled table quotes.

    Attributes:
        tau: Kendall's tau against kNN top-1, in the criterion's direction.
        table: the labelled table(s) it was measured on.
        labels_to_settle: how many labelled images ranked those tables like all the labels did.
    """

    tau: float
    table: str
    labels_to_settle: str


#: Below this tau the unlabelled table says that its order is a hint.
WEAK_AGREEMENT = 0.5
#: The criterion an unlabelled compare ranks by: the one that agreed best with labels on the measured tables
#: (docs/results.md, "Ranking without labels": uniformity of the head embeddings, the best of the 14 on both tables:
#: tau +0.57 on the 16 digits rows, +0.79 on the 17 rows of the CIFAR-10 CPU compare).
DEFAULT_CRITERION = "uniformity"
#: Its measured agreement, as the table quotes it (None: not measured; the table then says so). The lower of the
#: two tables' taus.
DEFAULT_AGREEMENT: Agreement | None = Agreement(
    0.57,
    "the 16 methods of invprop's digits compare (+0.79 on the 17 of its CIFAR-10 CPU compare; docs/results.md)",
    "more than 1,000 images (on CIFAR-10, 1,000 gave tau +0.67 against all the labels; on digits, 450 gave +0.42)",
)


def kendall_tau(criterion: Sequence[float | None], labels: Sequence[float | None]) -> float | None:
    """Kendall's tau-b between a criterion and a labelled measure over the rows that have both (None with fewer than
    three such rows, or when either is constant)."""
    pairs = [(c, y) for c, y in zip(criterion, labels) if c is not None and y is not None]
    if len(pairs) < 3:
        return None
    tau = kendalltau([c for c, _ in pairs], [y for _, y in pairs]).statistic
    return None if tau is None or not math.isfinite(tau) else float(tau)


def agreement(rows: Sequence[Row], measure: str = LABELLED_RANKING) -> dict[str, float | None]:
    """Each criterion's Kendall tau against ``measure`` over ``rows``, signed so that positive means the criterion's
    own direction ranks like the labels (a criterion without a direction: the raw tau)."""
    labels = [row.get(measure) for row in rows]
    result: dict[str, float | None] = {}
    for name in CRITERIA:
        criterion = CRITERIA.get(name)
        tau = kendall_tau(criterion.values(rows), labels)
        result[name] = None if tau is None else tau if criterion.higher_is_better is not False else -tau
    return result


def ranked_by(rows: Sequence[Row], name: str) -> list[float | None]:
    """Each row's value of criterion ``name``, as a key where larger ranks first (None: unranked)."""
    criterion = CRITERIA.get(name)
    sign = -1.0 if criterion.higher_is_better is False else 1.0
    return [None if v is None else sign * v for v in criterion.values(rows)]


__all__ = [
    "Agreement",
    "DEFAULT_AGREEMENT",
    "DEFAULT_CRITERION",
    "WEAK_AGREEMENT",
    "CRITERIA",
    "Criterion",
    "LABELLED_RANKING",
    "SCORES_KEY",
    "agreement",
    "kendall_tau",
    "ranked_by",
]
