"""Data-parallel training of a small CNN on scikit-learn's digits, with miniray.train.

The 8x8 digit images ship with scikit-learn, so nothing is downloaded. Two
worker processes train one model with DistributedDataParallel (gloo on the
CPU); every epoch rank 0 saves a checkpoint. A second run then resumes from
the first run's last checkpoint and trains a few epochs more.

Run: python examples/train_mnist_like.py [--workers 2] [--epochs 6] [--quick]
"""

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

import miniray
import miniray.train as train
from miniray.train import Checkpoint, CheckpointConfig, RunConfig, ScalingConfig
from miniray.train.torch import TorchTrainer


def train_loop(config):
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from miniray.train.torch import get_device, prepare_data_loader, prepare_model

    torch.manual_seed(0)  # every rank starts from the same weights (DDP also syncs them)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 8x8 -> 4x4
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    start_epoch = 0
    checkpoint = train.get_checkpoint()
    if checkpoint is not None:  # a resumed run, or a restart after a failure
        state = torch.load(os.path.join(checkpoint.path, "state.pt"))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = state["epoch"] + 1
    model = prepare_model(model)

    # Arrays from the object store are read-only views of shared memory: copy.
    x_train, y_train = (torch.tensor(np.array(a)) for a in (config["x_train"], config["y_train"]))
    x_test, y_test = (torch.tensor(np.array(a)) for a in (config["x_test"], config["y_test"]))
    loader = prepare_data_loader(DataLoader(TensorDataset(x_train, y_train),
                                            batch_size=config["batch_size"], shuffle=True))
    test_loader = prepare_data_loader(DataLoader(TensorDataset(x_test, y_test), batch_size=256))
    rank = train.get_context().get_world_rank()

    for epoch in range(start_epoch, start_epoch + config["epochs"]):
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)  # a new shuffle every epoch
        model.train()
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()          # DDP averages the gradients over the workers here
            optimizer.step()
        # Each rank scores its share of the test set; all_reduce sums the counts.
        model.eval()
        counts = torch.zeros(2, device=get_device())
        with torch.no_grad():
            for x, y in test_loader:
                counts += torch.tensor([(model(x).argmax(1) == y).sum().item(), len(y)])
        if dist.is_initialized():
            dist.all_reduce(counts)
        with tempfile.TemporaryDirectory() as tmp:
            reported = None
            if rank == 0:
                plain = model.module if hasattr(model, "module") else model
                torch.save({"model": plain.state_dict(), "optimizer": optimizer.state_dict(),
                            "epoch": epoch}, os.path.join(tmp, "state.pt"))
                reported = Checkpoint.from_directory(tmp)
            train.report({"epoch": epoch, "loss": loss.item(),
                          "test_accuracy": (counts[0] / counts[1]).item()},
                         checkpoint=reported)


def load_digits_arrays(seed=0):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]   # N x 1 x 8 x 8
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    split = int(0.8 * len(y))
    tr, te = order[:split], order[split:]
    return x[tr], y[tr], x[te], y[te]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--resume-epochs", type=int, default=3)
    parser.add_argument("--storage", default=None, help="default: a temporary folder")
    parser.add_argument("--quick", action="store_true", help="CI size: 2 + 1 epochs")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.resume_epochs = 2, 1

    miniray.init(num_cpus=max(2, args.workers))
    x_train, y_train, x_test, y_test = load_digits_arrays()
    storage = args.storage or tempfile.mkdtemp(prefix="miniray_train_")
    config = {"lr": 2e-3, "batch_size": 64, "epochs": args.epochs, "x_train": x_train,
              "y_train": y_train, "x_test": x_test, "y_test": y_test}
    scaling = ScalingConfig(num_workers=args.workers)

    started = time.perf_counter()
    result = TorchTrainer(
        train_loop, train_loop_config=config, scaling_config=scaling,
        run_config=RunConfig(name="digits", storage_path=storage,
                             checkpoint_config=CheckpointConfig(num_to_keep=2))).fit()
    for m in result.metrics_history:
        print(f"epoch {m['epoch']}: loss {m['loss']:.3f}  test accuracy {m['test_accuracy']:.3f}")
    print(f"first run: {time.perf_counter() - started:.1f}s, checkpoint {result.checkpoint.path}")

    started = time.perf_counter()
    resumed = TorchTrainer(
        train_loop, train_loop_config={**config, "epochs": args.resume_epochs},
        scaling_config=scaling, resume_from_checkpoint=result.checkpoint,
        run_config=RunConfig(name="digits_resumed", storage_path=storage)).fit()
    for m in resumed.metrics_history:
        print(f"epoch {m['epoch']}: loss {m['loss']:.3f}  test accuracy {m['test_accuracy']:.3f}"
              "  (resumed)")
    print(f"resumed run: {time.perf_counter() - started:.1f}s")
    assert resumed.metrics_history[0]["epoch"] == args.epochs, "did not resume"
    miniray.shutdown()
    if args.storage is None:
        shutil.rmtree(storage, ignore_errors=True)


if __name__ == "__main__":
    main()
