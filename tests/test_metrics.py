import numpy as np
import pytest

from dualenc.metrics import RankingMetrics, format_metrics, truth_ranks

# Candidate 0 is the truth. Ties count against it.
#   row 0: 0.9 beats all                        -> rank 1; vs Distractor_0 0.8: hit
#   row 1: 0.7 and the tied 0.5 are >= 0.5      -> rank 3; vs 0.7: miss
#   row 2: the tied 0.3 is >= 0.3               -> rank 2; vs the tie: miss
#   row 3: 0.4 and 0.2 are >= 0.1               -> rank 3; vs 0.0: hit
TABLE = np.array(
    [
        [0.9, 0.8, 0.1, 0.2],
        [0.5, 0.7, 0.5, 0.1],
        [0.3, 0.3, 0.2, 0.1],
        [0.1, 0.0, 0.4, 0.2],
    ]
)


def test_truth_ranks_count_ties_against_the_truth():
    assert truth_ranks(TABLE).tolist() == [1, 3, 2, 3]


def test_recall_and_mrr_on_a_hand_made_table():
    metrics = RankingMetrics()
    metrics.add(TABLE)
    result = metrics.result()
    # R@1/2: rows 0 and 3 -> 2/4. R@1/4: row 0 -> 1/4. R@2/4: rows 0 and 2 -> 2/4.
    # MRR: (1 + 1/3 + 1/2 + 1/3) / 4 = 13/24.
    assert result == pytest.approx(
        {"R@1/2": 0.5, "R@1/4": 0.25, "R@2/4": 0.5, "MRR": 13 / 24, "n": 4}
    )


def test_sums_and_counts_give_the_same_result_in_any_batching():
    whole, parts = RankingMetrics(), RankingMetrics()
    whole.add(TABLE)
    parts.add(TABLE[:1])
    parts.add(TABLE[1:])
    assert parts.result() == whole.result()


def test_ten_candidates_report_the_reference_keys():
    # Truth at 0.5; distractors 0.9 and 0.6 are above it, the rest below -> rank 3.
    row = np.array([[0.5, 0.1, 0.9, 0.6, 0.0, 0.0, 0.2, 0.3, 0.4, 0.1]])
    metrics = RankingMetrics()
    metrics.add(row)
    metrics.add_loss(3.0, 2)
    result = metrics.result()
    assert result == pytest.approx(
        {"R@1/2": 1.0, "R@1/10": 0.0, "R@2/10": 0.0, "R@5/10": 1.0, "MRR": 1 / 3, "n": 1,
         "loss": 1.5}
    )
    assert format_metrics(result, ["loss", "R@1/10"]) == "loss 1.5000 | R@1/10 0.0000"


def test_a_changed_candidate_count_is_refused():
    metrics = RankingMetrics()
    metrics.add(TABLE)
    with pytest.raises(ValueError, match="expected 4 candidates"):
        metrics.add(np.zeros((1, 3)))
