"""`SyntheticReferringRows`: the rows of `make_synthetic_referring_dataset`, drawn on read, without `datasets`."""

import numpy as np
import PIL.Image
import pytest

from transformers_self1e.data import SyntheticConfig, SyntheticReferringRows, make_synthetic_referring_dataset

CONFIG = SyntheticConfig(image_size=112, no_target_rate=0.3)


def test_rows_equal_those_of_the_dataset():
    rows, dataset = SyntheticReferringRows(6, 3, CONFIG), make_synthetic_referring_dataset(6, 3, CONFIG)
    assert len(rows) == len(dataset) == 6
    for row, expected in zip(rows, dataset, strict=True):
        assert row.keys() == expected.keys()
        for name, value in expected.items():
            if isinstance(value, PIL.Image.Image):
                assert row[name].mode == value.mode and np.array_equal(np.asarray(row[name]), np.asarray(value))
            else:
                assert row[name] == value


def test_indexing_is_that_of_a_sequence():
    rows = SyntheticReferringRows(3, 0, CONFIG)
    assert rows[-1]["sample_id"] == 2 and rows[0]["sample_id"] == 0
    with pytest.raises(IndexError):
        rows[3]
    with pytest.raises(TypeError):
        rows["0"]
    with pytest.raises(ValueError, match="must not be negative"):
        SyntheticReferringRows(-1, 0)
