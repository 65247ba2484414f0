"""Speed and quality of the clustering methods (issue 7), each with its baseline in the same run:

  kmeans     fdsl.ssl.kmeans (100k x 256 random float32, k=1000, 10 iterations + the assignment) against
             faiss.Kmeans (train + one search) and scikit-learn's MiniBatchKMeans (10 epochs)
  features   fdsl.engine.features.extract against a bare `model(x)` loop over the same loader
  digits     scikit-learn digits, raw pixels -> PCA whitening -> k-means (k=10): NMI with the labels
  deepcluster  a tiny DeepCluster run on the digits exported as an image folder (32 px), then a linear probe
             on its conv features beside the same probe on a random-init trunk

    PYTHONPATH=. taskset -c 0 python bench/clustering.py                 # all, pinned to one core
    PYTHONPATH=. python bench/clustering.py --only kmeans digits
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
    p.add_argument("--skip-sklearn", action="store_true", help="leave out MiniBatchKMeans (slow)")
    p.add_argument("--epochs", type=int, default=20, help="DeepCluster epochs on the digits")
    p.add_argument("--dc-k", type=int, default=30, help="DeepCluster clusters on the 1500 digit images")
    p.add_argument("--dc-reassignment", type=int, default=2, help="DeepCluster re-clusters every N epochs")
    p.add_argument("--probe-epochs", type=int, default=10)
    p.add_argument("--conv", type=int, default=10, help="conv layer probed after the DeepCluster run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="DeepCluster and probe seeds")
    p.add_argument("--workdir", default=None, help="keep the digits folder and runs here")
    return p.parse_args()


def bench_kmeans(args) -> None:
    import faiss

    from fdsl.ssl.kmeans import kmeans

    x = np.random.default_rng(0).standard_normal((args.n, args.dim)).astype(np.float32)
    ours, raw = [], []
    for _ in range(args.repeats):  # alternating, medians reported
        t = time.perf_counter()
        res = kmeans(x, args.k, niter=args.niter, seed=0)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        km = faiss.Kmeans(args.dim, args.k, niter=args.niter, seed=1, max_points_per_centroid=10 ** 9)
        km.train(x)
        _, labels = km.index.search(x, 1)
        raw.append(time.perf_counter() - t)
    print(f"kmeans {args.n}x{args.dim} k={args.k} {args.niter} iterations: fdsl {statistics.median(ours):.2f}s, "
          f"faiss.Kmeans {statistics.median(raw):.2f}s -> fdsl / faiss = "
          f"{statistics.median(ours) / statistics.median(raw):.3f} (target <= 1.10); "
          f"empty clusters: fdsl {int((res.counts == 0).sum())}, faiss "
          f"{args.k - len(np.unique(labels))}", flush=True)
    t = time.perf_counter()
    kmeans(x, args.k, niter=args.niter, seed=0, backend="torch")
    torch_time = time.perf_counter() - t
    print(f"kmeans: fdsl with --use_faiss false (torch/MKL matmul E-step) {torch_time:.2f}s -> "
          f"{statistics.median(raw) / torch_time:.2f}x the speed of faiss.Kmeans", flush=True)
    if args.skip_sklearn:
        return
    from sklearn.cluster import MiniBatchKMeans

    t = time.perf_counter()
    MiniBatchKMeans(args.k, init="random", n_init=1, max_iter=args.niter, batch_size=1024, tol=0.0,
                    max_no_improvement=None, random_state=0).fit(x)
    sk = time.perf_counter() - t
    print(f"kmeans: scikit-learn MiniBatchKMeans {sk:.2f}s -> sklearn / fdsl = {sk / statistics.median(ours):.1f}x "
          "(target >= 5)", flush=True)


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

    from fdsl.ssl.kmeans import kmeans
    from fdsl.ssl.pca import fit_pca

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    for dim in (16, 32):
        scores = []
        for seed in range(5):
            pca = fit_pca(x, dim)
            scores.append(normalized_mutual_info_score(y, kmeans(pca.apply(x), 10, niter=20, seed=seed).labels))
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
    cores = max(1, len(os.sched_getaffinity(0)))  # taskset -c 0: one thread everywhere, no OpenMP oversubscription
    torch.set_num_threads(cores)
    import faiss
    from threadpoolctl import threadpool_limits

    faiss.omp_set_num_threads(cores)
    threadpool_limits(cores)
    for name in args.only:
        {"kmeans": bench_kmeans, "features": bench_features, "digits": bench_digits,
         "deepercluster": bench_deepcluster, "deepcluster": bench_deepcluster}[name](args)


if __name__ == "__main__":
    main()
