"""mix_datasets: rows per dataset follow the rates, the order follows the seed; the paper's presets."""

from collections import Counter

import pytest

from transformers_self1e.data import SELF1E_RATES, SELF1E_SEG_RATES, mix_datasets, rows_to_dataset

SIZES = {"vqa": 50, "referring": 7, "semantic": 11, "reasoning": 3}


def task_dataset(task: str, size: int):
    rows = [
        {
            "image": None,
            "conversation": [{"role": "user", "content": [{"type": "text", "text": f"{task} {index}"}]}],
            "expressions": [],
            "masks": [],
            "task": task,
            "source": task,
            "no_target": False,
        }
        for index in range(size)
    ]
    return rows_to_dataset(rows)


@pytest.fixture(scope="module")
def datasets():
    return {task: task_dataset(task, size) for task, size in SIZES.items()}


def texts(dataset) -> list[str]:
    return [conversation[0]["content"][0]["text"] for conversation in dataset["conversation"]]


def test_presets_are_the_papers_rates():
    assert SELF1E_RATES == {"vqa": 1, "referring": 1, "semantic": 1, "reasoning": 1}
    assert SELF1E_SEG_RATES == {"vqa": 1, "referring": 20, "semantic": 6, "reasoning": 6}


@pytest.mark.parametrize("rates", [SELF1E_RATES, SELF1E_SEG_RATES])
def test_rows_per_task_follow_the_rates(datasets, rates):
    mixed = mix_datasets({task: (datasets[task], rates[task]) for task in datasets}, seed=0)
    counts = Counter(mixed["task"])
    assert counts == {task: SIZES[task] * rates[task] for task in SIZES}
    # Every row of a dataset appears `rate` times.
    assert set(Counter(texts(mixed)).values()) == set(rates.values())
    # Shuffled: the first quarter holds every task in about its share.
    head = Counter(mixed.select(range(len(mixed) // 4))["task"])
    for task, count in counts.items():
        assert abs(head[task] / (len(mixed) // 4) - count / len(mixed)) < 0.1


def test_fractional_rates_keep_a_seeded_subset(datasets):
    mixed = mix_datasets({"vqa": (datasets["vqa"], 0.5), "semantic": (datasets["semantic"], 2.0)}, seed=3)
    counts = Counter(mixed["task"])
    assert counts == {"vqa": 25, "semantic": 22}
    assert len({text for text in texts(mixed) if text.startswith("vqa")}) == 25


def test_order_depends_only_on_the_seed(datasets):
    specification = {task: (datasets[task], SELF1E_SEG_RATES[task]) for task in datasets}
    first, again, other = (
        mix_datasets(specification, 1),
        mix_datasets(specification, 1),
        mix_datasets(specification, 2),
    )
    assert texts(first) == texts(again)
    assert texts(first) != texts(other) and sorted(texts(first)) == sorted(texts(other))
    halves = [mix_datasets({"vqa": (datasets["vqa"], 0.5)}, seed) for seed in (1, 1, 2)]
    assert texts(halves[0]) == texts(halves[1]) and set(texts(halves[0])) != set(texts(halves[2]))


def test_bad_rates_raise(datasets):
    with pytest.raises(ValueError, match="non-negative"):
        mix_datasets({"vqa": (datasets["vqa"], -1)})
    with pytest.raises(ValueError, match="zero rows"):
        mix_datasets({"vqa": (datasets["vqa"], 0)})
    with pytest.raises(ValueError, match="empty"):
        mix_datasets({})
