"""Fleet comparison: robust z-scores among like packs only."""

from __future__ import annotations

from trackingbms.analytics import fleet_scores


def _pack(n: int, r: float, chem: str = "lfp", cap: float = 100.0) -> dict:
    return {
        "id": f"p{n}",
        "chemistry": chem,
        "cell_count": 16,
        "rated_capacity_ah": cap,
        "resistance_mohm": r,
    }


def test_outlier_among_like_packs() -> None:
    packs = [_pack(n, 6.0 + 0.1 * (n % 3)) for n in range(8)] + [_pack(9, 12.0)]
    scores = fleet_scores(packs)
    assert scores["p9"]["outliers"] == ["resistance_mohm"]
    assert all(not scores[f"p{n}"]["outliers"] for n in range(8))
    assert scores["p9"]["peers"] == 9


def test_unlike_packs_are_not_compared() -> None:
    packs = [_pack(n, 6.0 + 0.1 * (n % 3)) for n in range(6)]
    packs += [_pack(10, 40.0, chem="nmc"), _pack(11, 2.0, cap=280.0)]
    scores = fleet_scores(packs)
    assert scores["p10"]["z"] == {} and scores["p11"]["z"] == {}  # no peers: nothing to say
    assert scores["p10"]["peers"] == 1
    assert all(not scores[f"p{n}"]["outliers"] for n in range(6))
