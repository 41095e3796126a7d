"""Train a small convolutional network on scikit-learn's 8×8 digits with fastconv.

The network is two :class:`fastconv.Conv2D` layers with ReLU and a dense softmax layer,
written in plain NumPy and trained by minibatch SGD (no momentum, no weight decay)::

    (N, 1, 8, 8) → Conv2D(1→16, 3×3, pad 1) → ReLU → (N, 16, 8, 8)
                 → Conv2D(16→32, 3×3, stride 2, pad 1) → ReLU → (N, 32, 4, 4)
                 → flatten (N, 512) → dense (512→10) → softmax

The 1,797 images of ``sklearn.datasets.load_digits`` (pixel values 0..16) are split
75% / 25% into training and test sets and standardised with the training set's mean and
standard deviation. The default run (30 epochs) takes a few seconds and reaches about
98% test accuracy. Needs scikit-learn (``pip install "fastconv[examples]"``)::

    python examples/train_digits.py
    python examples/train_digits.py --epochs 2 --train-size 300    # a quick look
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import fastconv


def load_data(train_size=None, test_fraction=0.25, seed=0, layout="NCHW", dtype=np.float32):
    """The digits as ((x_train, y_train), (x_test, y_test)).

    Parameters
    ----------
    train_size : int, optional
        Keep only this many training images (all of the split by default).
    test_fraction : float
        Share of the 1,797 images held out for testing.
    seed : int
        Seed of the shuffle that makes the split.
    layout : {"NCHW", "NHWC"}
    dtype : float32 or float64

    Returns
    -------
    tuple
        Images of shape (N, 1, 8, 8) (NCHW) or (N, 8, 8, 1) (NHWC), standardised by the
        mean and standard deviation of the training images, and their labels, int64 of
        shape (N,).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images                                        # (1797, 8, 8)
    images = images[:, None] if layout == "NCHW" else images[..., None]
    order = np.random.default_rng(seed).permutation(len(images))
    n_test = int(round(test_fraction * len(images)))
    test, train = order[:n_test], order[n_test:]
    if train_size is not None:
        train = train[:train_size]
    mean, std = images[train].mean(), images[train].std()
    images = ((images - mean) / std).astype(dtype)
    return (images[train], digits.target[train]), (images[test], digits.target[test])


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) (N, K) against integer `labels` (N,), and its
    gradient with respect to the logits, (N, K)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    loss = -log_probs[rows, labels].mean()
    grad = np.exp(log_probs)
    grad[rows, labels] -= 1.0
    return float(loss), grad / len(labels)


class DigitsCNN:
    """Conv2D → ReLU → Conv2D → ReLU → dense, with forward, backward and an SGD step.

    Parameters
    ----------
    layout : {"NCHW", "NHWC"}
        Layout of the images (and of the convolution weights: OIHW or HWIO).
    dtype : float32 or float64
    seed : int
        Seed of the PyTorch-style initialisation of all three layers.
    """

    def __init__(self, layout="NCHW", dtype=np.float32, seed=0):
        self.conv1 = fastconv.Conv2D(1, 16, 3, padding=1, layout=layout, dtype=dtype, seed=seed)
        self.conv2 = fastconv.Conv2D(16, 32, 3, stride=2, padding=1, layout=layout,
                                     dtype=dtype, seed=seed + 1)
        features = 32 * 4 * 4
        bound = 1.0 / np.sqrt(features)   # torch.nn.Linear's initialisation
        rng = np.random.default_rng(seed + 2)
        self.dense_weight = rng.uniform(-bound, bound, (features, 10)).astype(dtype)
        self.dense_bias = rng.uniform(-bound, bound, 10).astype(dtype)

    def forward(self, x):
        """Logits (N, 10) of images `x` (N, 1, 8, 8) or (N, 8, 8, 1); keeps what backward
        needs."""
        self.h1 = np.maximum(self.conv1(x), 0)
        self.h2 = np.maximum(self.conv2(self.h1), 0)
        self.features = self.h2.reshape(len(x), -1)
        return self.features @ self.dense_weight + self.dense_bias

    def backward(self, grad_logits):
        """Gradients of every parameter from the loss gradient (N, 10) of the last
        forward: the conv layers accumulate theirs, the dense ones are stored."""
        self.dense_weight_grad = self.features.T @ grad_logits
        self.dense_bias_grad = grad_logits.sum(axis=0)
        grad_h2 = (grad_logits @ self.dense_weight.T).reshape(self.h2.shape)
        grad_h2 *= self.h2 > 0                      # through the ReLU
        grad_h1 = self.conv2.backward(grad_h2)
        grad_h1 *= self.h1 > 0
        self.conv1.backward(grad_h1)                # the image's gradient is not needed

    def sgd_step(self, learning_rate):
        """parameter -= learning_rate · gradient, then clear the conv layers' gradients."""
        for conv in (self.conv1, self.conv2):
            conv.weight -= learning_rate * conv.weight_grad
            conv.bias -= learning_rate * conv.bias_grad
            conv.zero_grad()
        self.dense_weight -= learning_rate * self.dense_weight_grad
        self.dense_bias -= learning_rate * self.dense_bias_grad

    def evaluate(self, x, y):
        """(mean loss, accuracy) on images `x` and labels `y`."""
        logits = self.forward(x)
        loss, _ = softmax_cross_entropy(logits, y)
        return loss, float((logits.argmax(axis=1) == y).mean())


def build_parser():
    parser = argparse.ArgumentParser(
        prog="train_digits.py",
        description="Train a two-Conv2D network on scikit-learn's digits with fastconv.")
    parser.add_argument("--epochs", type=int, default=30, help="passes over the training set")
    parser.add_argument("--batch-size", type=int, default=16, help="images per SGD step")
    parser.add_argument("--lr", type=float, default=0.1,
                        help="initial SGD learning rate (decays linearly to 0)")
    parser.add_argument("--train-size", type=int, default=None,
                        help="use only this many training images (default: all 1,348)")
    parser.add_argument("--layout", type=str.upper, choices=["NCHW", "NHWC"], default="NCHW")
    # A step's convolutions are ~0.1 ms of work on 16 images of 8x8: less than a second
    # thread costs to wake, and far less than it costs when another process holds the core.
    parser.add_argument("--threads", type=int, default=1,
                        help="fastconv threads (default 1: the images are tiny)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and shuffling")
    return parser


def main(argv=None):
    """Train and report; returns a dict with the per-epoch history and the test accuracy.

    Keys: ``initial_loss`` (training loss before the first step), ``train_loss`` and
    ``test_accuracy`` (lists, one entry per epoch), ``final_test_accuracy``, ``seconds``.
    """
    args = build_parser().parse_args(argv)
    (x_train, y_train), (x_test, y_test) = load_data(args.train_size, seed=args.seed,
                                                     layout=args.layout)
    model = DigitsCNN(layout=args.layout, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    threads = args.threads
    print(f"digits: {len(x_train)} training and {len(x_test)} test images, {args.layout}, "
          f"fastconv {fastconv.__version__} on {threads} thread(s)")
    history = {"initial_loss": model.evaluate(x_train, y_train)[0], "train_loss": [],
               "test_accuracy": []}
    start = time.perf_counter()
    with fastconv.threads(threads):
        for epoch in range(1, args.epochs + 1):
            # The step shrinks linearly to zero over the run: large steps early, small
            # ones to settle at the end (still plain SGD, no momentum).
            learning_rate = args.lr * (1.0 - (epoch - 1) / args.epochs)
            order = rng.permutation(len(x_train))
            for first in range(0, len(order), args.batch_size):
                batch = order[first:first + args.batch_size]
                logits = model.forward(x_train[batch])
                _, grad = softmax_cross_entropy(logits, y_train[batch])
                model.backward(grad)
                model.sgd_step(learning_rate)
            train_loss, train_accuracy = model.evaluate(x_train, y_train)
            _, test_accuracy = model.evaluate(x_test, y_test)
            history["train_loss"].append(train_loss)
            history["test_accuracy"].append(test_accuracy)
            print(f"epoch {epoch:3d}/{args.epochs}  loss {train_loss:.4f}  "
                  f"train {100 * train_accuracy:5.1f}%  test {100 * test_accuracy:5.1f}%  "
                  f"{time.perf_counter() - start:6.1f} s", flush=True)
    history["seconds"] = time.perf_counter() - start
    history["final_test_accuracy"] = history["test_accuracy"][-1] if args.epochs else None
    if args.epochs:
        print(f"test accuracy {100 * history['final_test_accuracy']:.1f}% after "
              f"{args.epochs} epochs in {history['seconds']:.1f} s")
    return history


if __name__ == "__main__":
    main()
