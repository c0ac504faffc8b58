"""labkit's MeanShift against scikit-learn's MeanShift(bin_seeding=True) at the same bandwidth.

Data: embeddings like a trained discriminative-loss network produces, 12
Gaussian clusters (sigma per dimension) whose centres are at least
``separation`` apart, plus one small 64-point object; the number of points is
one 256x256 map (65,536) or a 512x512 one (262,144). Every figure is measured
in this run: scikit-learn runs once per configuration, in a child process
that is stopped after ``--sklearn-timeout`` seconds (then the ratio is a lower
bound and says so); labkit's time is the median of ``--repeats`` runs.
Both use one CPU thread by default (scikit-learn's MeanShift with
``n_jobs=None`` is single-threaded); ``--threads 0`` leaves torch's default.

    python benchmarks/bench_meanshift.py [--threads 1] [--repeats 3] [--sklearn-timeout 180]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from labkit.clustering import MeanShift

CONFIGS = [
    # (points, dims, sigma, separation, bandwidth, device, run scikit-learn)
    (65_536, 8, 0.1, 3.0, 0.5, "cpu", True),
    (262_144, 16, 0.1, 4.0, 1.0, "cpu", True),
    (1_048_576, 16, 0.1, 4.0, 1.0, "cuda", False),
]


def make_embeddings(
    n: int, dim: int, sigma: float, separation: float, clusters: int = 12, small: int = 64, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """float32 points ``[n, dim]`` and their cluster ids; id ``clusters`` is the ``small``-point object."""
    rng = np.random.default_rng(seed)
    centers: list[np.ndarray] = []
    while len(centers) < clusters + 1:
        c = rng.uniform(-3, 3, size=dim)
        if all(np.linalg.norm(c - o) >= separation for o in centers):
            centers.append(c)
    sizes = np.append(rng.multinomial(n - small, np.ones(clusters) / clusters), small)
    ids = np.repeat(np.arange(clusters + 1), sizes)
    points = np.asarray(centers)[ids] + rng.normal(0, sigma, size=(n, dim))
    order = rng.permutation(n)
    return points[order].astype(np.float32), ids[order]


def small_object_recovered(labels: np.ndarray, ids: np.ndarray, small_id: int) -> bool:
    """The small object's points share one label that no other point has."""
    mine = labels[ids == small_id]
    return len(np.unique(mine)) == 1 and int((labels == mine[0]).sum()) == len(mine)


def _sklearn_child(conn, n, dim, sigma, separation, bandwidth) -> None:  # runs in a child process
    from sklearn.cluster import MeanShift as SkMeanShift

    points, _ = make_embeddings(n, dim, sigma, separation)
    start = time.perf_counter()
    model = SkMeanShift(bandwidth=bandwidth, bin_seeding=True).fit(points)
    conn.send((time.perf_counter() - start, model.labels_))


def run_sklearn(n, dim, sigma, separation, bandwidth, timeout) -> tuple[float | None, np.ndarray | None]:
    """(seconds, labels) of scikit-learn, or (None, None) when it ran past ``timeout``."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_sklearn_child, args=(child, n, dim, sigma, separation, bandwidth))
    proc.start()
    result = (None, None)
    if parent.poll(timeout):
        result = parent.recv()
    proc.terminate()
    proc.join()
    return result


def run_labkit(points: np.ndarray, bandwidth: float, device: str, repeats: int) -> tuple[float, np.ndarray, int]:
    """(median seconds, labels, number of clusters); CUDA timings include the transfer of the points."""
    times, model = [], None
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        data = torch.from_numpy(points).to(device)
        model = MeanShift(bandwidth=bandwidth, bin_seeding=True).fit(data)
        labels = model.labels_.cpu()
        times.append(time.perf_counter() - start)
    return statistics.median(times), labels.numpy(), len(model.cluster_centers_)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sklearn-timeout", type=float, default=180.0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s); scikit-learn MeanShift(bin_seeding=True)")
    for n, dim, sigma, separation, bandwidth, device, with_sklearn in CONFIGS:
        title = f"{n:,} x {dim} ({device}, sigma {sigma}, bandwidth {bandwidth}, 12 clusters + 64-point object)"
        print(f"\n== {title}")
        if device == "cuda" and not torch.cuda.is_available():
            print("   CUDA not available on this machine: skipped")
            continue
        points, ids = make_embeddings(n, dim, sigma, separation)
        run_labkit(points[:4096], bandwidth, device, 1)  # warm-up (allocators, kernels)
        seconds, labels, n_clusters = run_labkit(points, bandwidth, device, args.repeats)
        ari = adjusted_rand_score(ids, labels)
        print(f"   labkit : {seconds:8.3f} s  {n_clusters:3d} clusters  ARI vs truth {ari:.4f}  "
              f"small object own cluster: {small_object_recovered(labels, ids, 12)}")
        if not with_sklearn:
            print("   scikit-learn: not run at this size")
            continue
        sk_seconds, sk_labels = run_sklearn(n, dim, sigma, separation, bandwidth, args.sklearn_timeout)
        if sk_seconds is None:
            print(f"   sklearn: > {args.sklearn_timeout:.0f} s (stopped at the timeout; no labels)")
            print(f"   ratio  : > {args.sklearn_timeout / seconds:.0f}x faster (lower bound)")
            continue
        sk_ari = adjusted_rand_score(ids, sk_labels)
        print(f"   sklearn: {sk_seconds:8.3f} s  {len(np.unique(sk_labels)):3d} clusters  ARI vs truth {sk_ari:.4f}  "
              f"small object own cluster: {small_object_recovered(sk_labels, ids, 12)}")
        print(f"   ratio  : {sk_seconds / seconds:.0f}x faster; ARI difference {ari - sk_ari:+.4f}; "
              f"ARI labkit vs sklearn {adjusted_rand_score(sk_labels, labels):.4f}")


if __name__ == "__main__":
    main()
