"""The scripts in examples/ run (with tiny settings) and compute what they claim.

Each example is imported from its file and its ``main(argv)`` called, so a change in
fastconv that breaks an example fails here; one test per example also runs the file as a
script. train_digits needs scikit-learn (in the ``test`` extra); retrieval needs
``fastconv.rmac`` and skips until it exists.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastconv

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PACKAGE_PARENT = str(Path(fastconv.__file__).resolve().parents[1])


def load_example(name):
    """The module examples/<name>.py, imported from its file."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(name, *args):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), *args],
                          capture_output=True, text=True, env=env, timeout=300)


needs_rmac = pytest.mark.skipif(not hasattr(fastconv, "rmac"),
                                reason="fastconv.rmac (docs/spec.md §4) is not in this build")


# ----------------------------------------------------------------------------- lecture

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lecture_methods_agree(capsys, dtype):
    lecture = load_example("lecture")
    rows = lecture.main(["--batch", "3", "--naive-batch", "2", "--size", "7", "--repeats", "1",
                         "--dtype", dtype, "--threads", "2"])
    assert [row["method"].split(" ")[0] for row in rows] == [
        "naive", "matmul", "as_strided", "fastconv.conv2d"]
    assert [row["batch"] for row in rows] == [2, 3, 3, 3]
    tolerance = 1e-5 if dtype == "float32" else 1e-13
    for row in rows:
        assert row["seconds"] > 0
        assert row["max_error"] <= tolerance, row
        assert row["ms_per_image"] == pytest.approx(1e3 * row["seconds"] / row["batch"])
    out = capsys.readouterr().out
    assert "lecture.8to16: Z (3, 7, 7, 8) NHWC, W (3, 3, 8, 16) HWIO" in out
    assert "output (3, 5, 5, 16)" in out and "all four agree" in out


def test_lecture_default_is_the_suite_layer():
    parser = load_example("lecture").build_parser()
    args = parser.parse_args([])
    layer = {entry.name: entry for entry in fastconv.bench.load_layers()}["lecture.8to16"]
    assert (args.batch, args.size, args.naive_batch) == (layer.batches[0], layer.size, 1)


def test_lecture_rejects_a_naive_batch_larger_than_the_batch():
    lecture = load_example("lecture")
    with pytest.raises(SystemExit, match=r"--naive-batch must be in 1\.\.--batch \(2\), got 3"):
        lecture.main(["--batch", "2", "--naive-batch", "3", "--size", "5"])


def test_lecture_script():
    result = run_script("lecture", "--batch", "2", "--size", "6", "--repeats", "1")
    assert result.returncode == 0, result.stderr
    assert "naive (7 loops)" in result.stdout and "all four agree" in result.stdout


# ----------------------------------------------------------------------------- train_digits

def test_softmax_cross_entropy_against_formula(rng):
    digits = load_example("train_digits")
    logits = rng.standard_normal((5, 10)) * 3
    labels = rng.integers(0, 10, 5)
    loss, grad = digits.softmax_cross_entropy(logits, labels)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.log(probabilities[np.arange(5), labels]).mean())
    np.testing.assert_allclose(grad, (probabilities - np.eye(10)[labels]) / 5, atol=1e-15)
    big, _ = digits.softmax_cross_entropy(logits + 1e4, labels)   # no overflow
    assert big == pytest.approx(loss)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_digits_cnn_gradients_match_finite_differences(rng, layout):
    digits = load_example("train_digits")
    model = digits.DigitsCNN(layout=layout, dtype=np.float64, seed=3)
    shape = (4, 1, 8, 8) if layout == "NCHW" else (4, 8, 8, 1)
    x = rng.standard_normal(shape)
    labels = rng.integers(0, 10, 4)

    def loss():
        return digits.softmax_cross_entropy(model.forward(x), labels)[0]

    _, grad = digits.softmax_cross_entropy(model.forward(x), labels)
    model.backward(grad)
    parameters = [(model.conv1.weight, model.conv1.weight_grad),
                  (model.conv1.bias, model.conv1.bias_grad),
                  (model.conv2.weight, model.conv2.weight_grad),
                  (model.conv2.bias, model.conv2.bias_grad),
                  (model.dense_weight, model.dense_weight_grad),
                  (model.dense_bias, model.dense_bias_grad)]
    step = 1e-6
    for parameter, gradient in parameters:
        gradient = gradient.copy()
        for _ in range(3):
            index = tuple(int(rng.integers(0, size)) for size in parameter.shape)
            saved = parameter[index]
            parameter[index] = saved + step
            above = loss()
            parameter[index] = saved - step
            below = loss()
            parameter[index] = saved
            assert gradient[index] == pytest.approx((above - below) / (2 * step),
                                                    rel=1e-5, abs=1e-9)


def test_sgd_step_moves_against_the_gradient_and_clears_it():
    digits = load_example("train_digits")
    model = digits.DigitsCNN(dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8))
    _, grad = digits.softmax_cross_entropy(model.forward(x), np.array([1, 2, 3]))
    model.backward(grad)
    before = model.conv2.weight.copy(), model.dense_bias.copy()
    gradients = model.conv2.weight_grad.copy(), model.dense_bias_grad.copy()
    model.sgd_step(0.5)
    np.testing.assert_allclose(model.conv2.weight, before[0] - 0.5 * gradients[0])
    np.testing.assert_allclose(model.dense_bias, before[1] - 0.5 * gradients[1])
    assert not model.conv2.weight_grad.any() and not model.conv1.bias_grad.any()


def test_train_digits_one_epoch_learns(capsys):
    pytest.importorskip("sklearn")
    digits = load_example("train_digits")
    history = digits.main(["--epochs", "1", "--train-size", "400"])
    assert len(history["train_loss"]) == len(history["test_accuracy"]) == 1
    assert history["initial_loss"] > 2.0                      # about log(10) untrained
    assert history["train_loss"][0] < 0.7 * history["initial_loss"]
    assert history["final_test_accuracy"] > 0.5                # chance is 0.1
    out = capsys.readouterr().out
    assert "digits: 400 training and 449 test images, NCHW" in out
    assert "epoch   1/1  loss" in out and "test accuracy" in out


def test_load_data_split_and_standardisation():
    pytest.importorskip("sklearn")
    digits = load_example("train_digits")
    (x_train, y_train), (x_test, y_test) = digits.load_data(layout="NHWC")
    assert x_train.shape == (1348, 8, 8, 1) and x_test.shape == (449, 8, 8, 1)
    assert x_train.dtype == np.float32 and y_train.shape == (1348,)
    assert abs(float(x_train.mean())) < 1e-5 and float(x_train.std()) == pytest.approx(1, 1e-5)
    assert sorted(np.unique(y_test)) == list(range(10))
    (subset, _), (same_test, same_labels) = digits.load_data(train_size=100)
    assert subset.shape == (100, 1, 8, 8)
    # The same test images in the same order, standardised with the subset's statistics:
    # an increasing affine function of the first split's.
    np.testing.assert_array_equal(same_labels, y_test)
    assert np.corrcoef(same_test.ravel(), x_test.ravel())[0, 1] > 1 - 1e-6


def test_train_digits_default_run_reaches_97_percent():
    # The README's claim: >= 97% test accuracy, well under a minute (about 5 s here).
    pytest.importorskip("sklearn")
    history = load_example("train_digits").main([])
    assert history["final_test_accuracy"] >= 0.97
    assert history["seconds"] < 60


def test_train_digits_script():
    pytest.importorskip("sklearn")
    result = run_script("train_digits", "--epochs", "1", "--train-size", "64", "--layout",
                        "nhwc")
    assert result.returncode == 0, result.stderr
    assert "epoch   1/1" in result.stdout


# ----------------------------------------------------------------------------- retrieval

def test_average_precision_pinned_values():
    retrieval = load_example("retrieval")
    assert retrieval.average_precision([True, False, True]) == pytest.approx((1 + 2 / 3) / 2)
    assert retrieval.average_precision([False, True]) == pytest.approx(0.5)
    assert retrieval.average_precision([True, True, False]) == 1.0
    assert retrieval.average_precision([False, False]) == 0.0
    ranking = np.array([[0, 1, 2, 3], [3, 2, 1, 0]])
    labels = np.array([0, 0, 1, 1])
    assert retrieval.mean_average_precision(ranking, np.array([0, 0]), labels) == \
        pytest.approx((1.0 + (1 / 3 + 2 / 4) / 2) / 2)


def test_rank_by_cosine_and_mac():
    retrieval = load_example("retrieval")
    database = np.array([[1.0, 0.0], [0.0, 5.0], [1.0, 1.0]])
    queries = np.array([[2.0, 0.1], [0.0, 1.0]])
    np.testing.assert_array_equal(retrieval.rank(queries, database), [[0, 2, 1], [1, 2, 0]])
    maps = np.zeros((1, 2, 3, 3))
    maps[0, 0, 1, 2], maps[0, 1, 0, 0] = 3.0, 4.0
    np.testing.assert_allclose(retrieval.mac(maps), [[0.6, 0.8]], rtol=1e-6)


def test_scene_generator_maps():
    retrieval = load_example("retrieval")
    scenes = retrieval.SceneGenerator(classes=3, channels=32, seed=1)
    maps = scenes.pictures(np.array([0, 1, 2, 0]), 12)
    assert maps.shape == (4, 32, 12, 12) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() > 0.5             # some part is drawn
    assert (maps < 0.1).mean() > 0.8                         # mostly weak background


@needs_rmac
def test_retrieval_ranks_better_than_chance(capsys):
    retrieval = load_example("retrieval")
    result = retrieval.main(["--classes", "4", "--per-class", "3", "--size", "16",
                             "--channels", "64"])
    assert result["database"].shape == (12, 64) and result["queries"].shape == (4, 64)
    np.testing.assert_allclose(np.linalg.norm(result["database"], axis=1), 1, rtol=1e-4)
    ranking = result["ranking"]
    assert ranking.shape == (4, 12)
    assert (np.sort(ranking, axis=1) == np.arange(12)).all()
    assert result["map_rmac"] > 0.5 and result["map_mac"] > 0.25  # random ranking: ~0.25
    assert "mAP: R-MAC" in capsys.readouterr().out


@needs_rmac
def test_retrieval_script():
    result = run_script("retrieval", "--classes", "3", "--per-class", "2", "--size", "12",
                        "--channels", "32")
    assert result.returncode == 0, result.stderr
    assert "mAP: R-MAC" in result.stdout
