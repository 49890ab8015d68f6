"""Synthetic teacher data and input normalization."""

import numpy as np
import pytest

from gradlab.config import config_from_dict
from gradlab.data import InputNormalizer, make_dataset

SMALL = {"n_train": 400, "n_test": 100, "input_dim": 8}


def dataset(seed=0, dtype="float64", loss="auto", **data):
    config = config_from_dict({"dtype": dtype, "data": {**SMALL, **data}, "train": {"loss": loss}})
    return make_dataset(config, np.random.default_rng(seed))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(
    ("task", "loss", "target_shape", "target_kind", "output_dim"),
    [
        ("regression", "auto", (1,), "float", 1),
        ("binary", "auto", (1,), "float", 1),
        ("binary", "mse", (1,), "float", 1),
        ("binary", "cross_entropy", (), "int64", 2),
        ("multiclass", "auto", (), "int64", 4),
        ("multiclass", "mse", (4,), "float", 4),
    ],
)
def test_shapes_and_dtypes(dtype, task, loss, target_shape, target_kind, output_dim):
    data = dataset(dtype=dtype, loss=loss, task=task, classes=4)
    expected_y = np.dtype(dtype) if target_kind == "float" else np.dtype(np.int64)
    assert data.x_train.shape == (400, 8)
    assert data.x_test.shape == (100, 8)
    assert data.x_train.dtype == data.x_test.dtype == np.dtype(dtype)
    assert data.y_train.shape == (400, *target_shape)
    assert data.y_test.shape == (100, *target_shape)
    assert data.y_train.dtype == data.y_test.dtype == expected_y
    assert data.task == task
    assert data.output_dim == output_dim
    assert data.normalizer is None


def test_class_targets_are_valid_labels_or_one_hot():
    binary = dataset(task="binary")
    assert set(np.unique(binary.y_train)) == {0.0, 1.0}
    labels = dataset(task="multiclass", classes=4)
    assert set(np.unique(labels.y_train)) == {0, 1, 2, 3}
    one_hot = dataset(task="multiclass", classes=4, loss="mse")
    assert set(np.unique(one_hot.y_train)) == {0.0, 1.0}
    np.testing.assert_array_equal(one_hot.y_train.sum(axis=1), 1.0)
    # the same draw, two encodings of the same labels
    np.testing.assert_array_equal(np.argmax(one_hot.y_train, axis=1), labels.y_train)


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
def test_same_seed_same_arrays_other_seed_other_arrays(task):
    first, again, other = dataset(3, task=task), dataset(3, task=task), dataset(4, task=task)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.x_train, other.x_train)
    assert not np.array_equal(first.y_train, other.y_train)


def test_training_set_does_not_depend_on_the_test_size():
    small, large = dataset(n_test=10), dataset(n_test=300)
    np.testing.assert_array_equal(small.x_train, large.x_train)
    np.testing.assert_array_equal(small.y_train, large.y_train)


def test_binary_classes_are_balanced():
    data = dataset(task="binary", n_train=2000, n_test=1000)
    assert data.y_train.mean() == 0.5  # the threshold is the training median
    # the test set shares the threshold: binomial std of the fraction is 0.016, allow 4 of them
    assert abs(data.y_test.mean() - 0.5) < 4 * np.sqrt(0.25 / 1000)


def test_regression_signal_is_standardized_on_the_training_set():
    clean = dataset(task="regression", noise=0.0)
    np.testing.assert_allclose(clean.y_train.mean(), 0.0, atol=1e-12)
    np.testing.assert_allclose(clean.y_train.std(), 1.0, rtol=1e-12)
    noisy = dataset(task="regression", noise=0.5)
    np.testing.assert_array_equal(noisy.x_train, clean.x_train)  # noise is drawn after inputs
    standard_noise = (noisy.y_train - clean.y_train) / 0.5
    # the sample std of 400 N(0, 1) draws has std 1/sqrt(800) = 0.035; allow 4 of them
    assert abs(standard_noise.std() - 1.0) < 4 / np.sqrt(800)


def test_targets_do_not_depend_on_the_input_offset_and_scale():
    plain = dataset(task="multiclass", classes=3)
    shifted = dataset(task="multiclass", classes=3, input_mean=100.0, input_scale=50.0)
    np.testing.assert_array_equal(shifted.y_train, plain.y_train)
    np.testing.assert_array_equal(shifted.y_test, plain.y_test)
    np.testing.assert_allclose(shifted.x_train, 100.0 + 50.0 * plain.x_train, rtol=1e-14)


def test_raw_inputs_have_the_configured_mean_and_std():
    data = dataset(input_mean=100.0, input_scale=50.0, n_train=2048, input_dim=32)
    count = data.x_train.size  # 65536 draws
    # standard errors: of the mean 50/sqrt(N) = 0.20, of the std 50/sqrt(2N) = 0.14; allow 5
    assert abs(data.x_train.mean() - 100.0) < 5 * 50.0 / np.sqrt(count)
    assert abs(data.x_train.std() - 50.0) < 5 * 50.0 / np.sqrt(2 * count)


def test_normalized_inputs_use_training_statistics_for_both_sets():
    raw = dataset(input_mean=100.0, input_scale=50.0)
    normalized = dataset(input_mean=100.0, input_scale=50.0, normalize_inputs=True)

    mean = raw.x_train.sum(axis=0) / raw.x_train.shape[0]
    var = ((raw.x_train - mean) ** 2).sum(axis=0) / raw.x_train.shape[0]  # biased
    np.testing.assert_allclose(normalized.normalizer.mean, mean, rtol=1e-13)
    np.testing.assert_allclose(normalized.normalizer.var, var, rtol=1e-12)
    expected_test = (raw.x_test - mean) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(normalized.x_test, expected_test, rtol=1e-10, atol=1e-12)

    np.testing.assert_allclose(normalized.x_train.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(normalized.x_train.var(axis=0), var / (var + 1e-5), rtol=1e-12)
    # the test set's own statistics were not used: its mean is off by about 1/sqrt(100)
    assert np.abs(normalized.x_test.mean(axis=0)).max() > 1e-3
    np.testing.assert_array_equal(normalized.y_train, raw.y_train)


def test_float32_normalization_is_the_float64_result_rounded():
    wide = dataset(input_mean=100.0, normalize_inputs=True)
    narrow = dataset(input_mean=100.0, normalize_inputs=True, dtype="float32")
    np.testing.assert_array_equal(narrow.x_train, wide.x_train.astype(np.float32))
    np.testing.assert_array_equal(narrow.x_test, wide.x_test.astype(np.float32))


def test_normalizer_keeps_dtype_and_survives_a_constant_feature():
    x = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]], dtype=np.float32)
    normalizer = InputNormalizer.fit(x, eps=1e-5)
    np.testing.assert_array_equal(normalizer.mean, [3.0, 5.0])
    np.testing.assert_array_equal(normalizer.var, [8.0 / 3.0, 0.0])
    out = normalizer.transform(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], np.array([-2.0, 0.0, 2.0]) / np.sqrt(8 / 3 + 1e-5))
    np.testing.assert_array_equal(out[:, 1], 0.0)
