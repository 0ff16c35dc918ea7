"""bench/large_report.py: the photo-scenes text is generated from the numbers, so it says which model is ahead,
by how much, and how far each is from chance, whichever order the two accuracies come in."""
from __future__ import annotations

from multiglance.bench.large_report import scenes_lines


def scenes(two: float, one: float) -> dict:
    """A large-scenes record with the given test accuracies (the fields `scenes_lines` reads)."""
    def run(acc: float) -> dict:
        return {"epochs": 5, "val_accuracy_hard": acc, "accuracy_hard": acc, "test_flops_per_image": 5e8,
                "params": 1000, "train_seconds": 600.0, "train_images": 100, "val_images": 20, "test_images": 20}
    return {"scenes-two": run(two), "scenes-one": run(one), "gap_points": round(100 * (two - one), 2),
            "flop_ratio_one_over_two": 0.97}


def low_accuracy_sentence(record: dict) -> str:
    (line,) = [x for x in scenes_lines(record) if x.startswith("Chance is 10%")]
    return line


def test_two_glance_ahead_is_said_with_its_margin() -> None:
    text = low_accuracy_sentence(scenes(two=0.1695, one=0.0935))
    assert "the two-glance model is at 16.95% on test (6.95 points above chance)" in text
    assert "at 9.35% (within a point of chance)" in text
    assert "the two-glance model is 7.60 points ahead" in text


def test_one_glance_ahead_is_said_and_two_is_not_called_above_it() -> None:
    text = low_accuracy_sentence(scenes(two=0.0935, one=0.1695))
    assert "the two-glance model is at 9.35% on test (within a point of chance)" in text
    assert "at 16.95% (6.95 points above chance)" in text
    assert "the one-glance net is 7.60 points ahead" in text
    assert "two-glance model is 7.60" not in text and "a few points above" not in text
    assert "**missed** (-7.6 points" in scenes_lines(scenes(two=0.0935, one=0.1695))[-1]


def test_level_and_below_chance_are_said_as_such() -> None:
    text = low_accuracy_sentence(scenes(two=0.05, one=0.05))
    assert "the two are level" in text and text.count("5.00 points below chance") == 2


def test_no_chance_sentence_once_a_model_is_useful() -> None:
    lines = scenes_lines(scenes(two=0.45, one=0.20))
    assert not [x for x in lines if x.startswith("Chance is")]
    assert "**met** (+25.0 points" in lines[-1]
