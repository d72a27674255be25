"""invprop.evaluation.criteria: the registry's directions, Kendall's tau against an oracle counted pair by pair, CLID
across a table's rows, and the note above a table ranked without labels."""

from __future__ import annotations

import itertools
import statistics

import pytest

from invprop.evaluation.compare_table import agreement_note
from invprop.evaluation.criteria import CRITERIA, WEAK_AGREEMENT, Agreement, agreement, kendall_tau, ranked_by


def tau_by_pairs(x: list[float], y: list[float]) -> float:
    """Kendall's tau of untied values: (concordant - discordant) pairs over all pairs."""
    signs = [(a[0] - b[0]) * (a[1] - b[1]) for a, b in itertools.combinations(zip(x, y), 2)]
    return (sum(s > 0 for s in signs) - sum(s < 0 for s in signs)) / len(signs)


def rows_of(knn: list[float], **scores: list[float]) -> list[dict[str, object]]:
    return [
        {"method": f"m{i}", "knn_top1": k, "label_free": {name: values[i] for name, values in scores.items()}}
        for i, k in enumerate(knn)
    ]


def test_kendall_tau_matches_the_pair_count_and_skips_missing_rows() -> None:
    x, y = [0.3, 0.9, 0.1, 0.5, 0.7], [0.2, 0.8, 0.4, 0.1, 0.9]
    assert kendall_tau(x, y) == pytest.approx(tau_by_pairs(x, y))
    assert kendall_tau([*x, None], [*y, 0.5]) == pytest.approx(tau_by_pairs(x, y))  # a row without a score
    assert kendall_tau([1.0, 2.0], [1.0, 2.0]) is None  # too few rows to say
    assert kendall_tau([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None  # a constant criterion says nothing


def test_agreement_is_signed_by_each_criterion_s_direction() -> None:
    knn = [0.5, 0.6, 0.7, 0.8]
    rows = rows_of(knn, rankme=[10.0, 20.0, 30.0, 40.0], alignment=[0.9, 0.7, 0.5, 0.3], id=[4.0, 3.0, 2.0, 1.0])
    taus = agreement(rows)
    assert taus["rankme"] == pytest.approx(1.0)  # higher is better, and higher ranks like kNN
    assert taus["alignment"] == pytest.approx(1.0)  # lower is better: falling with kNN rising is agreement
    assert taus["id"] == pytest.approx(-1.0)  # no direction of its own: the raw tau
    assert taus["lidar"] is None  # no row has it
    assert ranked_by(rows, "alignment") == [-0.9, -0.7, -0.5, -0.3]  # larger key ranks first


def test_clid_adds_the_standardised_cluster_learnability_and_intrinsic_dimension() -> None:
    cl, dim = [0.2, 0.5, 0.4], [3.0, 9.0, 6.0]
    got = CRITERIA.get("clid").values(rows_of([0.1, 0.2, 0.3], cl=cl, id=dim))

    def z(values: list[float]) -> list[float]:
        mean, spread = statistics.fmean(values), statistics.pstdev(values)
        return [(v - mean) / spread for v in values]

    assert got == pytest.approx([a + b for a, b in zip(z(cl), z(dim))])
    assert CRITERIA.get("clid_backbone").values(rows_of([0.1, 0.2, 0.3], cl=cl, id=dim)) == [None, None, None]


def test_the_note_says_which_criterion_ranked_and_how_far_to_trust_it() -> None:
    criterion = CRITERIA.get("rankme_backbone")
    unmeasured = agreement_note(criterion, None)
    assert unmeasured.startswith("Ranked without labels by RankMe (backbone)") and "not been measured" in unmeasured
    weak = agreement_note(criterion, Agreement(WEAK_AGREEMENT - 0.1, "the digits table", "40 images"))
    assert "Kendall tau +0.40 on the digits table" in weak and "Labelling 40 images" in weak and "--labels" in weak
    strong = agreement_note(criterion, Agreement(0.8, "the digits table", "40 images"))
    assert "+0.80" in strong and "--labels" not in strong
