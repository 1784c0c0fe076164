"""A small GAN trained on scikit-learn's 8x8 digits by N workers, then sampled in parallel.

Training runs on miniray.train workers that form one torch.distributed (gloo)
group. ``--sync-interval 1`` wraps generator and discriminator in
DistributedDataParallel (gradients averaged every step); ``--sync-interval K``
with K > 1 trains each worker on its own and averages the parameters with
``all_reduce`` every K steps (local SGD: less communication, staler models).
Rank 0 checkpoints the generator; miniray tasks then load that checkpoint and
generate the sample grid in parallel, written as a PNG without any image
library. ``--baseline`` also trains one worker for the same epochs and compares.

Run: python examples/gan_digits/main.py [--workers 2] [--epochs 60] [--sync-interval 1]
        [--out samples.png] [--baseline]
"""

import argparse
import os
import struct
import tempfile
import time
import zlib

import numpy as np

import miniray
import miniray.train as train
from miniray.train import Checkpoint, RunConfig, ScalingConfig
from miniray.train.torch import TorchTrainer

Z_DIM = 32


def make_models():
    from torch import nn

    generator = nn.Sequential(
        nn.Linear(Z_DIM, 128), nn.LeakyReLU(0.2), nn.Linear(128, 128), nn.LeakyReLU(0.2),
        nn.Linear(128, 64), nn.Tanh())
    discriminator = nn.Sequential(
        nn.Linear(64, 128), nn.LeakyReLU(0.2), nn.Linear(128, 64), nn.LeakyReLU(0.2),
        nn.Linear(64, 1))
    return generator, discriminator


def train_gan(config):
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader, TensorDataset

    from miniray.train.torch import prepare_data_loader, prepare_model

    ctx = train.get_context()
    world, rank = ctx.get_world_size(), ctx.get_world_rank()
    torch.manual_seed(config["seed"])             # same initial weights on every rank
    generator, discriminator = make_models()
    interval = config["sync_interval"]
    ddp = interval == 1 and world > 1
    if ddp:
        generator, discriminator = prepare_model(generator), prepare_model(discriminator)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config["lr"], betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config["lr"], betas=(0.5, 0.999))
    data = torch.tensor(np.array(config["images"]))
    loader = prepare_data_loader(DataLoader(TensorDataset(data), batch_size=config["batch_size"],
                                            shuffle=True, drop_last=True))
    noise = torch.Generator().manual_seed(config["seed"] * 1000 + rank)  # different per rank
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    params = list(generator.parameters()) + list(discriminator.parameters())
    step = 0

    def average_parameters():
        # Local SGD: every K steps the workers agree on the mean of their weights.
        with torch.no_grad():
            for p in params:
                dist.all_reduce(p)
                p /= world

    for epoch in range(config["epochs"]):
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        for (real,) in loader:
            n = len(real)
            with torch.no_grad():                  # no backward through G here (DDP-safe)
                fake = generator(torch.randn(n, Z_DIM, generator=noise))
            # One discriminator pass over real and fake together: DDP wants one
            # forward per backward.
            logits = discriminator(torch.cat([real, fake]))
            labels = torch.cat([torch.full((n, 1), 0.9), torch.zeros(n, 1)])  # smoothed
            d_loss = bce(logits, labels)
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()

            g_loss = bce(discriminator(generator(torch.randn(n, Z_DIM, generator=noise))),
                         torch.ones(n, 1))
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
            step += 1
            if not ddp and world > 1 and step % interval == 0:
                average_parameters()
        last = epoch == config["epochs"] - 1
        if last and not ddp and world > 1:
            average_parameters()                   # one model at the end
        with tempfile.TemporaryDirectory() as tmp:
            reported = None
            if rank == 0 and (last or (epoch + 1) % config["checkpoint_every"] == 0):
                plain = generator.module if ddp else generator
                torch.save(plain.state_dict(), os.path.join(tmp, "generator.pt"))
                reported = Checkpoint.from_directory(tmp)
            train.report({"epoch": epoch, "d_loss": d_loss.item(), "g_loss": g_loss.item(),
                          "steps": step}, checkpoint=reported)


@miniray.remote(num_cpus=1)
def generate(checkpoint_path, seed, count):
    """Load the generator from the checkpoint and draw ``count`` samples."""
    import torch

    torch.set_num_threads(1)
    generator, _ = make_models()
    generator.load_state_dict(torch.load(os.path.join(checkpoint_path, "generator.pt")))
    generator.eval()
    with torch.no_grad():
        z = torch.randn(count, Z_DIM, generator=torch.Generator().manual_seed(seed))
        images = generator(z).numpy()
    return ((images + 1) / 2).clip(0, 1).reshape(count, 8, 8)


def write_png(path, pixels):
    """Write a grayscale uint8 array as a PNG (zlib only: no image library needed)."""
    height, width = pixels.shape
    raw = b"".join(b"\x00" + pixels[row].tobytes() for row in range(height))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def grid(images, columns, scale=4, gap=1):
    """Tile 8x8 images into one picture, each pixel scaled up ``scale`` times."""
    rows = -(-len(images) // columns)
    cell = 8 * scale + gap
    out = np.full((rows * cell + gap, columns * cell + gap), 96, np.uint8)  # grey lines
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        big = np.kron((image * 255).astype(np.uint8), np.ones((scale, scale), np.uint8))
        top, left = gap + r * cell, gap + c * cell
        out[top:top + 8 * scale, left:left + 8 * scale] = big
    return out


def quality(samples, classifier):
    """Digit-likeness (mean top class probability) and diversity (effective classes of 10)."""
    probs = classifier.predict_proba(samples.reshape(len(samples), 64))
    mean = probs.mean(axis=0)
    diversity = float(np.exp(-(mean * np.log(mean + 1e-12)).sum()))
    return float(probs.max(axis=1).mean()), diversity


def run(args, workers, images, storage, name):
    started = time.perf_counter()
    result = TorchTrainer(
        train_gan,
        train_loop_config={"images": images, "epochs": args.epochs, "lr": args.lr,
                           "batch_size": args.batch_size, "sync_interval": args.sync_interval,
                           "seed": args.seed, "checkpoint_every": max(1, args.epochs // 4)},
        scaling_config=ScalingConfig(num_workers=workers),
        run_config=RunConfig(name=name, storage_path=storage)).fit()
    seconds = time.perf_counter() - started
    # Distributed generation: one task per worker, each drawing its share of the grid.
    count = args.rows * args.rows
    shares = np.array_split(np.arange(count), workers)
    parts = miniray.get([generate.remote(result.checkpoint.path, args.seed + i, len(s))
                         for i, s in enumerate(shares)])
    return result, seconds, np.concatenate(parts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--sync-interval", type=int, default=1,
                        help="1: DDP every step; K > 1: average parameters every K steps")
    parser.add_argument("--batch-size", type=int, default=32, help="per worker")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=10, help="the grid is rows x rows")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "samples.png"))
    parser.add_argument("--baseline", action="store_true",
                        help="also train 1 worker for the same epochs and compare")
    args = parser.parse_args()
    if args.sync_interval < 1:
        parser.error("--sync-interval must be >= 1")

    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    pixels = (digits.images / 16.0).reshape(-1, 64)
    classifier = LogisticRegression(max_iter=2000).fit(pixels, digits.target)
    images = (pixels * 2 - 1).astype(np.float32)          # tanh range
    miniray.init(num_cpus=max(2, args.workers))
    storage = tempfile.mkdtemp(prefix="miniray_gan_")
    try:
        runs = [(args.workers, args.out)]
        if args.baseline and args.workers != 1:
            root, ext = os.path.splitext(args.out)
            runs.append((1, f"{root}_1worker{ext}"))
        real = quality(pixels[:200].reshape(-1, 8, 8), classifier)
        print(f"real digits:          digit-likeness {real[0]:.2f}, diversity {real[1]:.1f}/10")
        for workers, out in runs:
            result, seconds, samples = run(args, workers, images, storage, f"gan_{workers}")
            write_png(out, grid(samples, args.rows))
            like, diversity = quality(samples, classifier)
            m = result.metrics
            print(f"{workers} worker(s), K={args.sync_interval}: {seconds:5.1f}s train, "
                  f"{m['steps']} steps/worker, d_loss {m['d_loss']:.2f} g_loss {m['g_loss']:.2f}, "
                  f"digit-likeness {like:.2f}, diversity {diversity:.1f}/10 -> {out}")
    finally:
        miniray.shutdown()
        import shutil

        shutil.rmtree(storage, ignore_errors=True)


if __name__ == "__main__":
    main()
