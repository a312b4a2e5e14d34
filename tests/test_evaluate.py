import numpy as np
import pytest

from vssl_jax import evaluate
from vssl_jax.data import transforms


def test_accuracies_match_a_hand_count():
    names = ["a", "b", "c"]
    logits = np.array(
        [
            [3.0, 2.0, 1.0],  # label 0: top-1 right
            [3.0, 2.0, 1.0],  # label 1: top-1 wrong
            [1.0, 3.0, 2.0],  # label 2: top-1 wrong
            [0.0, 0.0, 5.0],  # label 2: right
        ]
    )
    labels = np.array([0, 1, 2, 2])
    results = evaluate.accuracy_results(logits, labels, names)
    assert results["top1"] == 0.5
    assert results["top5"] == 1.0  # three classes: every label is in the top 5
    assert results["per_class_accuracy"] == {"a": 1.0, "b": 0.0, "c": 0.5}
    assert results["mean_class_accuracy"] == pytest.approx(0.5)
    assert results["num_examples"] == 4 and results["num_classes"] == 3


def test_three_crops_run_along_the_long_side():
    video = np.arange(2 * 6 * 10 * 3, dtype=np.uint8).reshape(2, 6, 10, 3)  # wide frames
    crops = transforms.spatial_crops(video, 4, 3)
    assert crops.shape == (3, 2, 4, 4, 3)
    for crop, left in zip(crops, (0, 3, 6), strict=True):
        np.testing.assert_array_equal(crop, video[:, 1:5, left : left + 4])
    tall = video.transpose(0, 2, 1, 3)  # 10 x 6
    for crop, top in zip(transforms.spatial_crops(tall, 4, 3), (0, 3, 6), strict=True):
        np.testing.assert_array_equal(crop, tall[:, top : top + 4, 1:5])
    np.testing.assert_array_equal(transforms.spatial_crops(video, 4, 1)[0], video[:, 1:5, 3:7])
    with pytest.raises(ValueError, match="num_test_crops must be 1 or 3"):
        transforms.spatial_crops(video, 4, 2)
