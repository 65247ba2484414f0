"""Speed and quality of the clustering methods (issue 7), each with its baseline in the same run:

  kmeans     fdsl.ssl.kmeans (100k x 256 random float32, k=1000, 10 iterations + the assignment) against
             faiss.Kmeans (train + one search), scikit-learn's KMeans (lloyd) and MiniBatchKMeans (10 epochs),
             at 1 and 2 threads: process CPU time and wall time, ratios to the fastest of the three
  features   fdsl.engine.features.extract against a bare `model(x)` loop over the same loader
  digits     scikit-learn digits, raw pixels -> PCA whitening -> k-means (k=10): NMI with the labels
  deepcluster  a tiny DeepCluster run on the digits exported as an image folder (32 px), then a linear probe
             on its conv features beside the same probe on a random-init trunk

    PYTHONPATH=. taskset -c 0 python bench/clustering.py                 # all, pinned to one core
    PYTHONPATH=. python bench/clustering.py --only kmeans digits
    PYTHONPATH=. python bench/clustering.py --only kmeans --quick       # k-means at a tiny size, seconds
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile
import time

import numpy as np
import torch


def options():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", default=["kmeans", "features", "digits", "deepercluster"])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--niter", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="k-means: thread counts to compare")
    p.add_argument("--backends", nargs="+", default=["blas", "torch", "faiss"], help="k-means: fdsl's searches")
    p.add_argument("--quick", action="store_true", help="k-means at a tiny size (5000x32, k=50, 3 iterations)")
    p.add_argument("--epochs", type=int, default=20, help="DeepCluster epochs on the digits")
    p.add_argument("--dc-k", type=int, default=30, help="DeepCluster clusters on the 1500 digit images")
    p.add_argument("--dc-reassignment", type=int, default=2, help="DeepCluster re-clusters every N epochs")
    p.add_argument("--probe-epochs", type=int, default=10)
    p.add_argument("--conv", type=int, default=10, help="conv layer probed after the DeepCluster run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="DeepCluster and probe seeds")
    p.add_argument("--workdir", default=None, help="keep the digits folder and runs here")
    return p.parse_args()


def kmeans_contenders(args, x: np.ndarray, init: np.ndarray) -> dict:
    """name -> run(): each does `niter` Lloyd updates and one assignment of every row from the same initial
    centroids, and returns the final mean squared distance (the peers' own stopping rules switched off)."""
    import faiss
    from sklearn.cluster import KMeans, MiniBatchKMeans

    from fdsl.ssl.kmeans.driver import KMeansOptions, kmeans
    from fdsl.ssl.kmeans.search import choose_backend

    def fdsl(backend):
        return lambda: kmeans(x, args.k, KMeansOptions(niter=args.niter, seed=0, backend=backend)).losses[-1]

    def faiss_kmeans():
        km = faiss.Kmeans(args.dim, args.k, niter=args.niter, seed=1, max_points_per_centroid=10 ** 9)
        km.train(x, init_centroids=init)
        return float(km.index.search(x, 1)[0].mean())

    def sk_lloyd():
        km = KMeans(args.k, init=init, n_init=1, max_iter=args.niter, tol=0.0, algorithm="lloyd").fit(x)
        return km.inertia_ / len(x)

    def sk_minibatch():  # 10 epochs of batches of 1024 = the GEMM work of 10 Lloyd passes, then the labels
        km = MiniBatchKMeans(args.k, init=init, n_init=1, max_iter=args.niter, batch_size=1024, tol=0.0,
                             max_no_improvement=None, random_state=0).fit(x)
        return km.inertia_ / len(x)

    runs = {f"fdsl ({b}{', default' if b == choose_backend('cpu') else ''})": fdsl(b) for b in args.backends}
    runs.update({"faiss.Kmeans": faiss_kmeans, "sklearn KMeans lloyd": sk_lloyd, "sklearn MiniBatchKMeans": sk_minibatch})
    return runs


def blas_libraries() -> str:
    """Which BLAS each package loaded (the OpenBLAS kernel decides the GEMM speed of numpy, scipy and faiss)."""
    from threadpoolctl import threadpool_info

    return ", ".join(f"{os.path.basename(i['filepath']).split('-')[0]} {i.get('version')} {i.get('architecture', '')}"
                     for i in threadpool_info() if i["user_api"] == "blas")


def set_threads(n: int) -> None:
    import faiss
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    threadpool_limits(n)  # OpenBLAS of numpy/scipy/faiss, the OpenMP of scikit-learn and faiss
    faiss.omp_set_num_threads(n)


def bench_kmeans(args) -> None:
    """Process CPU time (all threads) and wall time of each contender, repeats interleaved in a rotating order,
    medians; ratios against the fastest peer (faiss.Kmeans, KMeans lloyd, MiniBatchKMeans)."""
    from fdsl.engine.distributed import DistInfo
    from fdsl.ssl.kmeans.driver import initial_centroids
    from fdsl.ssl.kmeans.ids import strided_ids

    x = np.random.default_rng(0).standard_normal((args.n, args.dim)).astype(np.float32)
    init = initial_centroids(x, strided_ids(len(x), None), args.k, 0, DistInfo())  # fdsl's start, for all
    runs = kmeans_contenders(args, x, init)
    peers = ("faiss.Kmeans", "sklearn KMeans lloyd", "sklearn MiniBatchKMeans")
    print(f"kmeans {args.n}x{args.dim} float32, k={args.k}, {args.niter} iterations + one assignment, same initial "
          f"centroids; {args.repeats} interleaved repeats, medians", flush=True)
    print(f"BLAS: {blas_libraries()}; torch: MKL {torch.backends.mkl.is_available()}; OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', '(unset)')}", flush=True)
    for threads in args.threads:
        set_threads(threads)
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        wall: dict[str, list[float]] = {name: [] for name in runs}
        loss = {}
        names = list(runs)
        for r in range(args.repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                c, w = time.process_time(), time.perf_counter()
                loss[name] = runs[name]()
                cpu[name].append(time.process_time() - c)
                wall[name].append(time.perf_counter() - w)
        med_cpu = {name: statistics.median(v) for name, v in cpu.items()}
        med_wall = {name: statistics.median(v) for name, v in wall.items()}
        best_cpu, best_wall = min(med_cpu[p] for p in peers), min(med_wall[p] for p in peers)
        print(f"{'threads':>7}  {'method':<28}{'CPU s':>8}{'wall s':>8}{'CPU/best peer':>15}{'wall/best peer':>16}"
              f"{'final loss':>12}")
        for name in runs:
            print(f"{threads:>7}  {name:<28}{med_cpu[name]:8.2f}{med_wall[name]:8.2f}{med_cpu[name] / best_cpu:15.3f}"
                  f"{med_wall[name] / best_wall:16.3f}{loss[name]:12.5f}", flush=True)


def bench_features(args) -> None:
    from torch.utils.data import DataLoader, TensorDataset

    from fdsl.engine.distributed import DistInfo
    from fdsl.engine.features import extract
    from fdsl.models.vgg import create_vgg16

    torch.manual_seed(0)
    model = create_vgg16(img_size=64, width=0.25).eval()
    data = TensorDataset(torch.randn(512, 3, 64, 64), torch.zeros(512, dtype=torch.long))
    loader = DataLoader(data, batch_size=64)
    info = DistInfo()

    @torch.no_grad()
    def bare():
        for images, _ in loader:
            model(images)

    bare()
    ours, base = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        extract(model, loader, info)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        bare()
        base.append(time.perf_counter() - t)
    o, b = statistics.median(ours), statistics.median(base)
    print(f"features: 512 images 64 px, VGG16 width 1/4: extract {512 / o:.0f} img/s, bare model(x) loop "
          f"{512 / b:.0f} img/s -> speed ratio {b / o:.3f} (target >= 0.9)", flush=True)


def bench_digits(args) -> None:
    from sklearn.datasets import load_digits
    from sklearn.metrics import normalized_mutual_info_score

    from fdsl.ssl.kmeans.driver import KMeansOptions, kmeans
    from fdsl.ssl.pca import fit_pca

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    for dim in (16, 32):
        scores = []
        for seed in range(5):
            pca = fit_pca(x, dim)
            scores.append(normalized_mutual_info_score(y, kmeans(pca.apply(x), 10, KMeansOptions(niter=20, seed=seed)).labels))
        print(f"digits: raw pixels -> PCA-whitening {dim} -> L2 -> k-means k=10: NMI {np.mean(scores):.3f} "
              f"(min {min(scores):.3f} over 5 seeds; target >= 0.6)", flush=True)


def export_digits(root: str, size: int = 32) -> str:
    from PIL import Image
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    for rank, i in enumerate(order):
        split = "train" if rank < 1500 else "val"
        folder = os.path.join(root, split, str(y[i]))
        os.makedirs(folder, exist_ok=True)
        img = Image.fromarray((x[i].reshape(8, 8) * 255 / 16).astype(np.uint8)).resize((size, size), Image.BILINEAR)
        img.convert("RGB").save(os.path.join(folder, f"{i:04d}.png"))
    return root


def bench_deepcluster(args) -> None:
    from fdsl.cli.main import main

    work = args.workdir or tempfile.mkdtemp(prefix="fdsl-bench-ssl-")
    digits = os.path.join(work, "digits")
    if not os.path.isdir(digits):
        export_digits(digits)
    tiny = ["--width", "0.25", "--img_size", "32", "--workers", "0", "--log_interval", "1000", "--save_every", "0"]
    results: dict[str, list[float]] = {"deepcluster": [], "random": []}
    for seed in args.seeds:
        run = os.path.join(work, f"deepcluster-s{seed}")
        t = time.perf_counter()
        code = main(["deepercluster", "--data_path", os.path.join(digits, "train"), *tiny, "--super_classes", "1",
                     "--rotnet", "false", "--k", str(args.dc_k), "--epoch_size", "data", "--dim_pca", "64", "--sobel", "true",
                     "--batch_size", "64", "--lr", "0.05", "--nepochs", str(args.epochs), "--reassignment",
                     str(args.dc_reassignment), "--niter", "10", "--seed", str(seed), "--dump_path", run,
                     "--resume", "auto"])
        assert code == 0
        with open(os.path.join(run, "summary.csv")) as f:
            rows = list(csv.DictReader(f))
        print(f"seed {seed}: deepcluster on digits: {len(rows)} epochs in {time.perf_counter() - t:.0f}s, loss "
              f"{float(rows[0]['train_loss']):.3f} -> {float(rows[-1]['train_loss']):.3f}, NMI with the digit "
              f"labels {float(rows[0]['nmi_classes']):.3f} (round 0) -> {float(rows[-1]['nmi_classes']):.3f}",
              flush=True)
        for name, weights in (("deepcluster", ["--pretrained", os.path.join(run, "last.pth.tar")]), ("random", [])):
            out = os.path.join(work, f"probe-{name}-conv{args.conv}-s{seed}")
            code = main(["eval-linear", "--data_path", digits, *tiny, *weights, "--sobel", "true", "--conv",
                         str(args.conv), "--nepochs", str(args.probe_epochs), "--batch_size", "64", "--lr", "0.01",
                         "--wd", "1e-5", "--seed", str(seed), "--dump_path", out, "--resume", "auto"])
            assert code == 0
            with open(os.path.join(out, "summary.csv")) as f:
                results[name].append(float(list(csv.DictReader(f))[-1]["eval_top1"]))
    gains = [d - r for d, r in zip(results["deepcluster"], results["random"])]

    def spread(values: list[float]) -> str:
        return f"{statistics.mean(values):.1f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.1f}"

    print(f"linear probe on conv{args.conv} (digits val, {args.probe_epochs} epochs, seeds {args.seeds}): "
          f"DeepCluster trunk {spread(results['deepcluster'])}% top-1, random-init trunk {spread(results['random'])}%, "
          f"gain {spread(gains)} points (per seed: {', '.join(f'{g:+.1f}' for g in gains)})", flush=True)


def main() -> None:
    args = options()
    if args.quick:
        args.n, args.dim, args.k, args.niter, args.repeats = 5000, 32, 50, 3, 1
    cores = max(1, len(os.sched_getaffinity(0)))  # taskset -c 0: one thread everywhere, no OpenMP oversubscription
    for name in args.only:
        set_threads(cores)  # bench_kmeans sets its own
        {"kmeans": bench_kmeans, "features": bench_features, "digits": bench_digits,
         "deepercluster": bench_deepcluster, "deepcluster": bench_deepcluster}[name](args)


if __name__ == "__main__":
    main()
