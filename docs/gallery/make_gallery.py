"""Make the gallery's pictures and tables (docs/gallery/*); their output is committed.

    pip install -e '.[demo,gallery]'
    python docs/gallery/make_gallery.py            # everything (about a minute and a half on 2 cores)
    python docs/gallery/make_gallery.py pyramid    # one part: demo, pyramid or training

Everything is seeded and nothing is downloaded: the demo's built-in scenes and
scikit-learn's bundled digits. Timings vary with the machine; the pictures and
numbers do not (up to the last bit of the training losses, which depend on
torch's CPU kernels).
"""

import argparse
import contextlib
import csv
import io
import os
import pathlib
import sys
import time

# torch and numba each keep an OpenMP thread pool; spinning, they wait on each other (see
# docs/performance.rst). Set before either is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

import softpool_nd

HERE = pathlib.Path(__file__).resolve().parent


def demo():
    """The demo's still picture (docs/demo.png), its table, and the 3-D clip as an animated GIF."""
    from softpool_nd.cli import main

    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        status = main(["demo", "--video", "--out", str(HERE)])
    if status != 0:
        raise SystemExit(f"softpool-nd demo failed with status {status}")
    # the still picture lives at docs/demo.png, where the README shows it
    (HERE / "softpool_demo.png").replace(HERE.parent / "demo.png")
    lines = [line for line in table.getvalue().splitlines() if not line.startswith("wrote ")]
    (HERE / "demo_table.txt").write_text("\n".join(lines).strip() + "\n")


def _mean_pool(x, k):
    h, w = x.shape[0] // k * k, x.shape[1] // k * k
    return x[:h, :w].reshape(h // k, k, w // k, k, *x.shape[2:]).mean(axis=(1, 3))


def pyramid():
    """Three levels of a SoftPool pyramid of the demo scene next to a mean pyramid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from softpool_nd.cli import scenes

    x = scenes.still()  # (256, 256, 3) in [0, 1]
    soft = softpool_nd.pyramid(x, 3, kernel=2, axes=(0, 1))
    mean = [x]
    for _ in range(3):
        mean.append(_mean_pool(mean[-1], 2))
    fig, axs = plt.subplots(2, 4, figsize=(10, 5.4), layout="constrained")
    for row, (name, levels) in enumerate([("SoftPool", soft), ("mean", mean)]):
        for i, level in enumerate(levels):
            ax = axs[row, i]
            ax.imshow(np.clip(level, 0, 1), interpolation="nearest")
            ax.set_title(f"{name} level {i}: {level.shape[0]}x{level.shape[1]}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("softpool_nd.pyramid(x, 3, kernel=2, axes=(0, 1)) against a mean pyramid", fontsize=10)
    fig.savefig(HERE / "pyramid.png", dpi=80)
    plt.close(fig)


def _digits(seed):
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8) in [0, 1]
    y = data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = len(x) * 3 // 4
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def _net(pool):
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        pool(),  # 8x8 -> 4x4
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        pool(),  # 4x4 -> 2x2
        nn.Flatten(),
        nn.Linear(32 * 2 * 2, 10),
    )


def _train(pool, seed, epochs, data):
    import torch

    torch.manual_seed(seed)
    x_tr, y_tr, x_te, y_te = (torch.from_numpy(a) for a in data)
    net = _net(pool)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for epoch in range(1, epochs + 1):
        net.train()
        total = 0.0
        for idx in torch.randperm(len(x_tr), generator=gen).split(64):
            opt.zero_grad()
            loss = loss_fn(net(x_tr[idx]), y_tr[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        net.eval()
        with torch.no_grad():
            logits = net(x_te)
            test_loss = loss_fn(logits, y_te).item()
            acc = (logits.argmax(1) == y_te).float().mean().item()
        rows.append((epoch, total / len(x_tr), test_loss, acc))
    return rows


def training(epochs=30, seeds=(0, 1, 2, 3, 4)):
    """A small CNN on scikit-learn's digits with SoftPool, max and average pooling: curves and CSVs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from softpool_nd.torch import SoftPool2d

    torch.set_num_threads(2)
    pools = {
        "SoftPool": lambda: SoftPool2d(2),
        "max": lambda: torch.nn.MaxPool2d(2),
        "average": lambda: torch.nn.AvgPool2d(2),
    }
    results = {}
    with open(HERE / "training.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["pooling", "seed", "epoch", "train_loss", "test_loss", "test_accuracy"])
        for name, pool in pools.items():
            for seed in seeds:
                start = time.perf_counter()
                rows = _train(pool, seed, epochs, _digits(seed))
                results[name, seed] = rows
                out.writerows([name, seed, e, f"{a:.5f}", f"{b:.5f}", f"{c:.4f}"] for e, a, b, c in rows)
                print(f"{name:8} seed {seed}: test accuracy {rows[-1][3]:.4f} ({time.perf_counter() - start:.1f} s)")
    with open(HERE / "training_final.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["pooling", *(f"seed {s}" for s in seeds), "mean"])
        for name in pools:
            final = [results[name, s][-1][3] for s in seeds]
            out.writerow([name, *(f"{a:.4f}" for a in final), f"{np.mean(final):.4f}"])
    fig, axs = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for name, colour in zip(pools, ("C3", "C0", "C2")):
        runs = np.array([results[name, s] for s in seeds])  # (seeds, epochs, 4)
        epoch = runs[0, :, 0]
        for ax, col, label in ((axs[0], 2, "test loss"), (axs[1], 3, "test accuracy")):
            mean = runs[:, :, col].mean(0)
            ax.plot(epoch, mean, color=colour, label=f"{name} (final {mean[-1]:.3f})")
            ax.fill_between(epoch, runs[:, :, col].min(0), runs[:, :, col].max(0), color=colour, alpha=0.2)
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
    axs[0].set_yscale("log")
    axs[1].set_ylim(0.85, 1.0)
    for ax in axs:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"CNN on scikit-learn digits (8x8), mean and range over {len(seeds)} seeds: SoftPool vs max vs average pooling",
        fontsize=10,
    )
    fig.savefig(HERE / "training.png", dpi=80)
    plt.close(fig)


PARTS = {"demo": demo, "pyramid": pyramid, "training": training}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", metavar="part", help=f"any of {', '.join(PARTS)} (default: all)")
    parts = parser.parse_args().parts or list(PARTS)
    if set(parts) - set(PARTS):
        parser.error(f"unknown part(s) {sorted(set(parts) - set(PARTS))}; choose from {list(PARTS)}")
    for part in parts:
        start = time.perf_counter()
        PARTS[part]()
        print(f"{part}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
