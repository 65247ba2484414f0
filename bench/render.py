"""Database generation speed on one core, PNG written, side by side with a baseline and the published renderers.

    python bench/render.py [--seconds 3] [--baseline SRC] [--published DIR [--published-python PY]]

Every row renders the database's published settings, encodes PNG and writes the file as the builder does
(temporary name + rename), on one pinned core. In the same run, on the same core:
  --baseline SRC   the same rows with another fdsl checkout (e.g. `git worktree add /tmp/fdsl-main main`),
                   so "1.3x today" targets are measured, not remembered;
  --published DIR  the published renderers, from a folder holding their public repositories
                   (FractalDB-Pretrained-ResNet-PyTorch, CVPR2022-Pretrained-ViT-PyTorch,
                   CVPR2023-FDSL-on-VisualAtom, 1p-frac) run with --published-python (a Python that has
                   their dependencies: numpy<1.24, pillow, noise). Each is run twice with n1 < n2 images
                   and timed as (n2 - n1) / (t2 - t1), so start-up is not counted. ExFractalDB's published
                   renderer needs an OpenGL (EGL) context and is not run.
Prints images/s and the ratios; the targets are issue #10's.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0

# name -> (label, absolute target in images/s or None, target as a multiple of the baseline or None)
ROWS = {
    "fractaldb": ("FractalDB-1k instances, 362 px", 1000, None),
    "onepfrac": ("1p-frac, 512 px", None, 1.3),
    "rcdb": ("RCDB, 512 px", 1000, None),
    "visualatom": ("VisualAtom, 512 px", 330, None),
    "exfractaldb": ("ExFractalDB views, 224 px", None, 1.3),
}


# -- fdsl rows (run in a child process whose sys.path starts with the source under test) -----------------
CLOCK = time.perf_counter  # --clock cpu: time.process_time, this process's CPU time (for a busy machine)


def timed(one_batch, seconds: float) -> float:
    """Images per second over whole batches (one_batch returns its image count), after one warm-up batch."""
    one_batch(warm_up=True)
    images, started = 0, CLOCK()
    while True:
        images += one_batch(warm_up=False)
        elapsed = CLOCK() - started
        if elapsed >= seconds:
            return images / elapsed


def fdsl_row(name: str, seconds: float, out: str) -> float:
    from fdsl.data import registry, writers

    files = iter(range(10**9))

    def save(db, cls, instances):
        """Encode and write as the builder does. Every file is new, as in a build (renaming over an existing
        file costs a disk flush on ext4), in folders of 1,000 as the published layouts have."""
        count = 0
        for image in db.render(cls, params[cls], instances):
            number = next(files)
            folder = os.path.join(out, str(number // 1000))
            if number % 1000 == 0:
                os.makedirs(folder, exist_ok=True)
            writers.atomic_write(os.path.join(folder, f"{number % 1000:04d}.png"), writers.encode_png(image))
            count += 1
        return count

    if name == "fractaldb":  # one class, its 25 weight rows x 10 draws x 4 flips in order
        db = registry.create("fractaldb", classes=1, instance=10, size=362)
        params = {0: db.class_params(0)}
        rows = iter(range(10**9))

        def batch(warm_up):
            row = next(rows) % 25
            return save(db, 0, range(row * 40, row * 40 + 40))
    elif name == "onepfrac":  # a class is one image; its pixel-threshold redraws are part of the cost
        db = registry.create("onepfrac", classes=10**6)
        params, classes = {}, iter(range(10**6))

        def batch(warm_up):
            cls = next(classes)
            params[cls] = db.class_params(cls)
            return save(db, cls, [0])
    elif name in ("rcdb", "visualatom"):  # one image of each of 200 classes: the class-to-class spread averaged
        db = registry.create(name, classes=200)
        params = {cls: db.class_params(cls) for cls in range(200)}

        def batch(warm_up):
            for cls in range(1 if warm_up else 200):
                save(db, cls, [cls % 1000])
            return 1 if warm_up else 200
    elif name == "exfractaldb":  # one class: 143 clouds x 7 random views
        db = registry.create("exfractaldb", classes=1)
        params = {0: db.class_params(0)}

        def batch(warm_up):
            return save(db, 0, range(7 if warm_up else 1000))
    else:
        raise SystemExit(f"unknown row {name}")
    return timed(batch, seconds)


def child(name: str, seconds: float, source: str, clock: str) -> None:
    global CLOCK
    CLOCK = time.process_time if clock == "cpu" else time.perf_counter
    os.environ["NUMBA_NUM_THREADS"] = "1"
    sys.path.insert(0, source)
    import cv2

    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as out:
        print(json.dumps({"images_per_s": fdsl_row(name, seconds, out)}))


def run_child(name: str, seconds: float, source: str, clock: str) -> float:
    cmd = ["taskset", "-c", str(CORE), sys.executable, os.path.abspath(__file__), "--row", name,
           "--seconds", str(seconds), "--source", source, "--clock", clock]
    env = {**os.environ, "PYTHONPATH": source, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} row failed with {source}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["images_per_s"]


# -- published renderers --------------------------------------------------------------------------------
def children_clock(clock: str) -> float:
    if clock == "wall":
        return time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # finished children and the processes they waited for
    return usage.ru_utime + usage.ru_stime


def timed_runs(make_cmd, n1: int, n2: int, python: str, cwd: str, clock: str) -> float:
    """(n2 - n1) / (t2 - t1): two runs of n1 and n2 images, each in a fresh output folder."""
    elapsed = []
    for n in (n1, n2):
        with tempfile.TemporaryDirectory() as out:
            cmd = ["taskset", "-c", str(CORE), python, *make_cmd(n, out)]
            started = children_clock(clock)
            subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
            elapsed.append(children_clock(clock) - started)
    return (n2 - n1) / (elapsed[1] - elapsed[0])


def published_row(name: str, root: str, python: str, scale: float, clock: str) -> float | None:
    if name == "rcdb":  # classes of 2 instances; the same seed makes run 1's classes a prefix of run 2's
        folder = os.path.join(root, "CVPR2022-Pretrained-ViT-PyTorch", "rcdb_render")
        extra = int(40 * scale)
        return timed_runs(lambda n, out: ["make_rcdb.py", f"--save_root={out}", "--numof_thread=1", "--thread_num=0",
                                          f"--numof_classes={n // 2}", "--numof_instances=2"],
                          2, 2 + 2 * extra, python, folder, clock)
    if name == "visualatom":
        folder = os.path.join(root, "CVPR2023-FDSL-on-VisualAtom", "visual_atomic_renderer")
        extra = int(30 * scale)
        return timed_runs(lambda n, out: ["render_VisualAtom.py", f"--save_root={out}", "--numof_thread=1",
                                          "--thread_num=0", f"--numof_classes={n // 2}", "--numof_instances=2",
                                          "--vertex_num_min=200", "--vertex_num_max=1000", "--perlin_min=0",
                                          "--line_num_min=1", "--line_num_max=200", "--line_width=0.1",
                                          "--radius_min=10", "--oval_rate=2", "--start_pos=512"],
                          2, 2 + 2 * extra, python, folder, clock)
    if name == "onepfrac":
        folder = os.path.join(root, "1p-frac", "1p-frac_generater", "src")
        return timed_runs(lambda n, out: ["render_from_oneparam_mp.py", f"--img_basesavedir={out}", "--sigma=4.0",
                                          "--delta=0.1", f"--sample={n}"], 1, 1 + max(2, int(3 * scale)), python,
                          folder, clock)
    if name == "fractaldb":  # run 1 has no category, run 2 one category (a searched fdsl class) x 2 weight rows
        folder = os.path.join(root, "FractalDB-Pretrained-ResNet-PyTorch", "fractal_renderer")
        work = tempfile.mkdtemp()
        sys.path.insert(0, REPO)
        from fdsl.data import registry

        params = registry.create("fractaldb", classes=1).class_params(0)
        for n in (0, 8):
            os.makedirs(os.path.join(work, str(n)))
        with open(os.path.join(work, "8", "00000.csv"), "w", newline="") as handle:
            csv.writer(handle).writerows(params.tolist())
        with open(os.path.join(work, "weights.csv"), "w") as handle:  # 2 rows x --instance 1 x 4 flips
            handle.write("1,1,1,1,1,1\n0.9,1,1,1,1,1\n")
        return timed_runs(lambda n, out: ["make_fractaldb.py", f"--load_root={work}/{n}", f"--save_root={out}/db",
                                          f"--weight_csv={work}/weights.csv", "--instance=1", "--image_size_x=362",
                                          "--image_size_y=362", "--iteration=200000"],
                          0, 8, python, folder, clock)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per fdsl row (default 3)")
    parser.add_argument("--baseline", metavar="SRC", help="another fdsl checkout to run the same rows with")
    parser.add_argument("--published", metavar="DIR", help="folder holding the published repositories")
    parser.add_argument("--published-python", default=sys.executable, metavar="PY",
                        help="Python with the published renderers' dependencies (numpy<1.24, pillow, noise)")
    parser.add_argument("--published-scale", type=float, default=1.0,
                        help="more (>1) or fewer published images per row (default 1: ~10-40 s per row)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: elapsed time (default); cpu: CPU time of the measured processes, for a machine "
                             "shared with other work")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--source", default=REPO, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        return child(args.row, args.seconds, args.source, args.clock)
    print(f"one core (cpu {CORE}), {args.clock} clock; fdsl: {REPO}; baseline: {args.baseline or '-'}; "
          f"published: {args.published or '-'}")
    header = f"{'database':<32} {'fdsl/s':>8} {'target':>8} {'base/s':>8} {'x base':>7} {'publ/s':>7} {'x publ':>7}  ok"
    print(header)
    for name in args.rows.split(","):
        label, absolute, relative = ROWS[name]
        rate = run_child(name, args.seconds, REPO, args.clock)
        base = run_child(name, args.seconds, os.path.abspath(args.baseline), args.clock) if args.baseline else None
        published = published_row(name, args.published, args.published_python, args.published_scale,
                                  args.clock) if args.published else None
        if absolute is not None:
            target, ok = f"{absolute}", rate >= absolute
        else:
            target, ok = f"{relative}x b", bool(base) and rate >= relative * base
        print(f"{label:<32} {rate:8.1f} {target:>8} {f'{base:.1f}' if base else '-':>8} "
              f"{f'{rate / base:.2f}x' if base else '-':>7} {f'{published:.2f}' if published else '-':>7} "
              f"{f'{rate / published:.0f}x' if published else '-':>7}  {'yes' if ok else 'NO'}", flush=True)


if __name__ == "__main__":
    main()
