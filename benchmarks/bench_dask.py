"""Benchmark: fastconv.dask.rmac over 2,000 VGG-16 conv5 feature maps (512×30×40 float32,
4.9 GB) on a dask.distributed LocalCluster of 1 and 2 worker processes, against the plain
NumPy call ``fastconv.rmac`` on the same data in one process.

The feature maps are generated on the workers, chunk by chunk (100 images, 246 MB), and
persisted there before the clock starts, so only the descriptors are timed: building and
submitting the graph, the per-chunk ``fastconv.rmac`` calls and gathering the (2000, 512)
result. Workers run one thread each (the nanny sets ``OMP_NUM_THREADS=1``), so 1 worker is
1 core and 2 workers are 2 cores.

As asv ``track_`` benchmarks (descriptors per second)::

    asv run --python=same --bench bench_dask

As a script, printing every runner and the ratios in one run (also the threaded scheduler)::

    python benchmarks/bench_dask.py [--images 2000] [--chunk 100] [--repeats 3]
"""
from __future__ import annotations

import argparse
import gc
import time

import numpy as np

import fastconv

CHANNELS, HEIGHT, WIDTH = 512, 30, 40
IMAGES = 2000
CHUNK = 100


def feature_maps(images=IMAGES, chunk=CHUNK, seed=0):
    """A lazy (images, 512, 30, 40) float32 dask array: standard-normal chunks of `chunk`
    images, each made from its own seed by the task that holds it."""
    import dask.array as da

    def make(block_info=None):
        location = block_info[None]["chunk-location"][0]
        shape = block_info[None]["chunk-shape"]
        return np.random.default_rng([seed, location]).standard_normal(shape, dtype=np.float32)

    return da.map_blocks(make, chunks=((chunk,) * (images // chunk), (CHANNELS,), (HEIGHT,),
                                       (WIDTH,)), dtype=np.float32,
                         meta=np.empty((0, 0, 0, 0), np.float32))


def best_time(run, repeats):
    """Shortest wall time of `repeats` calls (after one warm-up call)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def start_cluster(workers):
    """A LocalCluster of `workers` processes with one thread each, loopback only."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None)
    return cluster, Client(cluster)


def cluster_seconds(workers, images, chunk, repeats):
    """Seconds for rmac of `images` persisted maps on a cluster of `workers` processes."""
    import distributed

    import fastconv.dask as fdask

    cluster, client = start_cluster(workers)
    try:
        x = client.persist(feature_maps(images, chunk))
        distributed.wait(x)
        threads = set(client.run(fastconv.get_num_threads).values())
        seconds = best_time(lambda: client.compute(fdask.rmac(x)).result(), repeats)
        x = None  # let the cluster free the persisted maps
        return seconds, threads
    finally:
        client.close()
        cluster.close()


# --------------------------------------------------------------------------- asv

class RMACDask:
    """Descriptors per second: the plain call in one process, or 1 and 2 dask workers."""

    params = [["numpy, 1 thread", "numpy, 2 threads", "dask, 1 worker", "dask, 2 workers"]]
    param_names = ["runner"]
    unit = "descriptors/s"
    number = 1
    repeat = 1
    timeout = 900

    def setup(self, runner):
        try:
            import dask.array  # noqa: F401
            import distributed  # noqa: F401
        except ImportError:
            raise NotImplementedError("needs fastconv[dask]") from None

    def track_rmac_descriptors_per_second(self, runner):
        if runner.startswith("numpy"):
            x = feature_maps(IMAGES, CHUNK).compute(scheduler="threads")
            with fastconv.threads(1 if "1 thread" in runner else 2):
                seconds = best_time(lambda: fastconv.rmac(x), 3)
        else:
            seconds, _ = cluster_seconds(1 if "1 worker" in runner else 2, IMAGES, CHUNK, 3)
        return IMAGES / seconds


# --------------------------------------------------------------------------- script

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=IMAGES)
    parser.add_argument("--chunk", type=int, default=CHUNK)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    import dask

    import fastconv.dask as fdask

    images, chunk, repeats = args.images, args.chunk, args.repeats
    rows = {}
    # In one process: the whole array, then the same memory as dask chunks (views).
    maps = feature_maps(images, chunk)
    x = maps.compute(scheduler="threads")
    print(f"{images} maps of {CHANNELS}×{HEIGHT}×{WIDTH} float32 ({x.nbytes / 1e9:.1f} GB), "
          f"chunks of {chunk} ({x[:chunk].nbytes / 1e6:.0f} MB)")
    for threads in (1, 2):
        with fastconv.threads(threads):
            rows[f"numpy fastconv.rmac, {threads} thread(s)"] = best_time(
                lambda: fastconv.rmac(x), repeats)
    import dask.array as da
    local = da.from_array(x, chunks=(chunk, -1, -1, -1))
    for threads in (1, 2):
        with fastconv.threads(threads), dask.config.set(scheduler="threads", num_workers=2):
            rows[f"dask threaded scheduler, 2 threads × fastconv {threads}"] = best_time(
                lambda: fdask.rmac(local).compute(), repeats)
    x = local = None  # free the maps before the clusters start
    gc.collect()
    for workers in (1, 2):
        seconds, threads = cluster_seconds(workers, images, chunk, repeats)
        rows[f"dask LocalCluster, {workers} worker(s) × 1 thread"] = seconds
        print(f"  (fastconv threads on the workers: {sorted(threads)})")
    print(f"\n{'runner':<48} {'seconds':>8} {'descriptors/s':>14}")
    for name, seconds in rows.items():
        print(f"{name:<48} {seconds:8.3f} {images / seconds:14.0f}")
    names = list(rows)
    one, two = rows[names[-2]], rows[names[-1]]
    print(f"\n2 workers / 1 worker: {one / two:.2f}× the descriptors per second")
    print(f"1 worker vs numpy 1 thread: {one / rows[names[0]]:.2f}× the time "
          f"(overhead {100 * (one / rows[names[0]] - 1):.0f}%)")
    print(f"2 workers vs numpy 2 threads: {two / rows[names[1]]:.2f}× the time")


if __name__ == "__main__":
    main()
