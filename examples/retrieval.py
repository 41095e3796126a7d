"""Image retrieval with R-MAC: generated convolutional feature maps, ``fastconv.rmac``
descriptors and a cosine ranking.

R-MAC (Tolias, Sicre and Jégou, ICLR 2016) describes a CNN feature map (C, H, W) by one
unit vector of length C: the per-channel maximum over square regions at several scales
(``levels``), each region's vector L2-normalised, summed and L2-normalised again.
Retrieval then ranks a database by the cosine similarity of descriptors, a single matrix
product.

The feature maps are generated here, roughly as a CNN sees landmark photos: each of
``--classes`` landmarks is eight *parts*, each a sparse non-negative activation signature
over the channels at a fixed relative position. A picture spreads its landmark's parts
over most of the frame (random position and extent, a few parts occluded, gains
jittered), adds two compact unrelated objects (clutter, as strong as the landmark) and
weak background activity. The database has ``--per-class`` pictures per landmark; each
landmark also gets one query picture, of a different size. The script prints the top of
a few rankings and the mean average precision (mAP), next to the global max-pooling (MAC)
descriptor of the same maps: R-MAC's regions each weigh the landmark's parts spread over
the frame, where the global maximum gives the clutter equal weight::

    python examples/retrieval.py
    python examples/retrieval.py --classes 4 --per-class 3 --size 16
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import fastconv

# --------------------------------------------------------------------------- data

class SceneGenerator:
    """Random objects made of parts, and feature maps of pictures showing them.

    An object is `parts` parts; a part is a sparse non-negative signature over the
    channels (C/16 channels at 0.5..1) at a fixed relative position in the object's box.
    The first `classes` objects are the landmarks, the others are clutter.

    Parameters
    ----------
    classes : int
        Landmarks to retrieve.
    channels : int
        C, the channels of the feature maps and the length of the descriptors.
    parts : int
        Parts per object.
    seed : int
    """

    def __init__(self, classes, channels, parts=8, seed=0):
        self.rng = np.random.default_rng(seed)
        self.classes, self.channels = classes, channels
        objects = 3 * classes
        active = max(2, channels // 16)
        self.signatures = np.zeros((objects, parts, channels))
        for signature in self.signatures.reshape(-1, channels):
            chosen = self.rng.choice(channels, active, replace=False)
            signature[chosen] = self.rng.uniform(0.5, 1.0, active)
        self.positions = self.rng.random((objects, parts, 2))   # (row, column) in [0, 1)

    def _place(self, feature_map, obj, extent, occlusion):
        """Draw object `obj` into `feature_map` (C, H, W), in place: its box spans
        `extent` (a fraction) of the map, at a random position; each part is a 2×2 blob
        of its signature times a random gain, or missing with probability `occlusion`."""
        _, h, w = feature_map.shape
        offsets = np.floor(self.positions[obj] * extent * (min(h, w) - 2)).astype(int)
        top = self.rng.integers(0, h - 2 - offsets[:, 0].max() + 1)
        left = self.rng.integers(0, w - 2 - offsets[:, 1].max() + 1)
        for signature, (row, column) in zip(self.signatures[obj], offsets):
            if self.rng.random() < occlusion:
                continue
            blob = feature_map[:, top + row:top + row + 2, left + column:left + column + 2]
            np.maximum(blob, self.rng.uniform(0.7, 1.3) * signature[:, None, None], out=blob)

    def pictures(self, labels, size, clutter=2, occlusion=0.1):
        """Feature maps (N, C, size, size) float32, one per label: the landmark spread
        over 60-100% of the frame, `clutter` compact (10-20%) unrelated objects, and weak
        sparse background activity (2% of the activations, below 0.1)."""
        maps = np.empty((len(labels), self.channels, size, size), dtype=np.float32)
        for feature_map, label in zip(maps, labels):
            noise = self.rng.random(feature_map.shape)
            feature_map[...] = np.where(noise > 0.98, 5 * (noise - 0.98), 0)
            for _ in range(clutter):
                self._place(feature_map, self.rng.integers(self.classes, len(self.positions)),
                            self.rng.uniform(0.1, 0.2), occlusion)
            self._place(feature_map, label, self.rng.uniform(0.6, 1.0), occlusion)
        return maps


# --------------------------------------------------------------------------- ranking

def mac(features, eps=1e-6):
    """Global max-pooling baseline: (N, C, H, W) maps → L2-normalised (N, C) vectors."""
    vectors = features.max(axis=(2, 3))
    return vectors / (np.linalg.norm(vectors, axis=1, keepdims=True) + eps)


def rank(queries, database):
    """Database indices by decreasing cosine similarity, (Q, N), for descriptors
    `queries` (Q, C) and `database` (N, C)."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    d = database / np.linalg.norm(database, axis=1, keepdims=True)
    return np.argsort(-(q @ d.T), axis=1, kind="stable")


def average_precision(relevant):
    """Average precision of one ranking, given as booleans (best first)."""
    relevant = np.asarray(relevant, dtype=bool)
    if not relevant.any():
        return 0.0
    hits = np.cumsum(relevant)[relevant]               # relevant items seen so far
    positions = np.flatnonzero(relevant) + 1           # at these ranks
    return float((hits / positions).mean())


def mean_average_precision(ranking, query_labels, database_labels):
    """mAP of `ranking` (Q, N) given the query (Q,) and database (N,) labels."""
    return float(np.mean([average_precision(database_labels[order] == label)
                          for order, label in zip(ranking, query_labels)]))


# --------------------------------------------------------------------------- main

def build_parser():
    parser = argparse.ArgumentParser(
        prog="retrieval.py",
        description="R-MAC retrieval with fastconv.rmac on generated feature maps.")
    parser.add_argument("--classes", type=int, default=50, help="landmarks (default 50)")
    parser.add_argument("--per-class", type=int, default=10,
                        help="database pictures per landmark (default 10)")
    parser.add_argument("--size", type=int, default=32,
                        help="database feature maps are size × size (default 32); queries "
                             "are 1.25 times larger")
    parser.add_argument("--channels", type=int, default=256,
                        help="feature channels = descriptor length (default 256)")
    parser.add_argument("--levels", type=int, default=3, help="R-MAC scales (default 3)")
    parser.add_argument("--show", type=int, default=5, help="rankings to print (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv=None):
    """Generate, describe, rank and print. Returns a dict: ``map_rmac`` and ``map_mac``
    (floats), ``database`` and ``queries`` (R-MAC descriptors, (N, C) and (Q, C)) and
    ``ranking`` (Q, N)."""
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    scenes = SceneGenerator(args.classes, args.channels, seed=args.seed)
    database_labels = np.repeat(np.arange(args.classes), args.per_class)
    query_labels = np.arange(args.classes)
    database_maps = scenes.pictures(database_labels, args.size)
    query_maps = scenes.pictures(query_labels, args.size * 5 // 4)
    print(f"database: {database_maps.shape} feature maps (N, C, H, W); "
          f"queries: {query_maps.shape}")

    database = fastconv.rmac(database_maps, levels=args.levels)       # (N, C), unit rows
    queries = fastconv.rmac(query_maps, levels=args.levels)           # (Q, C)
    ranking = rank(queries, database)
    baseline = rank(mac(query_maps), mac(database_maps))

    for query in range(min(args.show, len(query_labels))):
        top = database_labels[ranking[query, :args.per_class]]
        marks = " ".join(str(label) + ("*" if label == query_labels[query] else "")
                         for label in top)
        print(f"query {query}: landmark {query_labels[query]}; top {len(top)}: {marks}")
    result = {"map_rmac": mean_average_precision(ranking, query_labels, database_labels),
              "map_mac": mean_average_precision(baseline, query_labels, database_labels),
              "database": database, "queries": queries, "ranking": ranking}
    print(f"mAP: R-MAC {result['map_rmac']:.3f}, MAC {result['map_mac']:.3f}, random "
          f"ranking about {args.per_class / len(database_labels):.3f} "
          f"({time.perf_counter() - start:.1f} s)")
    return result


if __name__ == "__main__":
    main()
