"""Training throughput: pneumo's trainer against a bare timm loop, same process, same settings.

Prints a table of images/s and the ratio to the bare loop (target >= 0.95x), plus the data
pipeline's own images/s (decoded-image cache + augmentation + preprocessing), which must exceed
the model's. Data: the Kermany train images when present (``--data DIR``), else phantoms.

    python benchmarks/train_throughput.py [--size 224] [--batch 32] [--steps 20] [--precision auto|bf16|fp32]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from pneumo_core.config import resolve  # noqa: E402
from pneumo_core.data.preprocess import Preprocessing  # noqa: E402
from pneumo_core.training import train  # noqa: E402
from pneumo_core.training.loader import CachedImages, EpochBatchSampler, make_loader  # noqa: E402
from pneumo_core.device import autocast, cpu_has_bf16, cpu_info, cpu_vector_units, pick_precision  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kermany-cxr"


def data_section(args) -> dict:
    n = args.batch * (args.steps + args.warmup)
    if args.data and Path(args.data).is_dir():
        # a CSV manifest of the first n images keeps decoding time out of the way
        rows = ["path,label"]
        for label in ("NORMAL", "PNEUMONIA"):
            files = sorted((Path(args.data) / "train" / label).glob("*.jpeg"))[: n // 2 + 1]
            rows += [f"{p},{label}" for p in files]
        manifest = Path(tempfile.mkdtemp()) / "bench.csv"
        manifest.write_text("\n".join(rows) + "\n")
        return {"name": "csv", "params": {"path": str(manifest), "root": "/"}, "image_size": args.size,
                "val_fraction": 0.1}
    return {"name": "synthetic", "params": {"n_train": n + 32, "n_val": 32, "n_test": 0, "size": args.size},
            "image_size": args.size, "min_val_images": 16}


def bare_loop(args, precision: str) -> float:
    """timm ResNet-18, AdamW, autocast, channels_last, tensors already in memory."""
    torch.manual_seed(0)
    model = timm.create_model("resnet18", in_chans=1, num_classes=2).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(args.batch, 1, args.size, args.size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (args.batch,))
    model.train()
    dev = torch.device("cpu")
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            t0 = time.perf_counter()
        with autocast(dev, precision):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return args.batch * args.steps / (time.perf_counter() - t0)


def pneumo_trainer(args, precision: str) -> float:
    """The full trainer (sampler, augmentation, class weights, clipping, scheduler) for one epoch;
    images/s is measured by the trainer over its training steps only."""
    rc = resolve({"name": "bench", "model": {"name": "resnet18"}, "data": data_section(args),
                  "augment": {"name": "albumentations", "params": {"preset": args.augment}},
                  "train": {"epochs": 1, "batch_size": args.batch, "precision": precision, "bootstrap": 0,
                            "max_train_batches": args.steps + args.warmup, "calibrate": False}})
    with tempfile.TemporaryDirectory() as run_dir:
        art = train(rc, Path(run_dir), resume=False, progress=False)
        import json

        hist = json.loads((art / "model.json").read_text())["training"]["history"]
    return hist[0]["images_per_s"]


def pipeline_only(args) -> float:
    """Cache -> augmentation -> preprocessing -> batches, no model."""
    from pneumo_core.plugin_manager import get_plugin_manager

    n = args.batch * (args.steps + args.warmup)
    images = np.random.default_rng(0).integers(0, 255, (n, args.size, args.size), dtype=np.uint8)
    spec = get_plugin_manager().augmentation("albumentations")
    aug = spec.build(spec.params_model(preset=args.augment), args.size, True)
    data = CachedImages(images, np.arange(n) % 2, Preprocessing(image_size=args.size), aug)
    loader = make_loader(data, EpochBatchSampler(n, args.batch, 0), 0)
    t0 = time.perf_counter()
    count = sum(len(x) for x, _ in loader)
    return count / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="auto: bf16 where the CPU has native bf16 (AMX, AVX512-BF16), else fp32, as training picks")
    p.add_argument("--augment", default="standard")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="Kermany root with train/; phantoms if missing")
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    if args.precision == "auto":
        args.precision = pick_precision("auto", torch.device("cpu"))
    bare = bare_loop(args, args.precision)
    ours = pneumo_trainer(args, args.precision)
    bare2 = bare_loop(args, args.precision)  # again, to bracket drift from other load on the machine
    base = (bare + bare2) / 2
    pipe = pipeline_only(args)
    src = "kermany" if args.data and Path(args.data).is_dir() else "phantoms"
    print(f"\nTraining throughput — ResNet-18, {args.size} px, batch {args.batch}, {args.precision}, "
          f"{args.steps} steps, data: {src}, {torch.get_num_threads()} threads")
    print(f"CPU: {cpu_info()[0] or 'unknown'} ({cpu_vector_units()}, native bf16: {'yes' if cpu_has_bf16() else 'no'})")
    print(f"{'what':<34}{'images/s':>10}{'ratio':>9}")
    print(f"{'bare timm loop (mean of 2 runs)':<34}{base:>10.1f}{1.0:>9.2f}")
    print(f"{'pneumo trainer':<34}{ours:>10.1f}{ours / base:>9.2f}   target >= 0.95")
    print(f"{'data pipeline alone (no model)':<34}{pipe:>10.1f}{pipe / base:>9.2f}   must exceed the model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
