"""How cost grows with data, on synthetic A/B logs of realistic shape (pushgen.data.synthetic).

1. Time per training epoch against the number of pairs (1x, 4x, 16x), tiny Llama backbone, the
   real training path (Lightning + RewardModule + test-grouped batches): linear means the seconds
   per pair stay flat.
2. Peak memory of data preparation (file -> pairs) against rows (1x, 4x, 16x), each size in a
   fresh process: Python-heap peak (tracemalloc) and resident-set growth over the imports, for the
   in-memory prepare() and for the out-of-core flow (data.out_of_core, pairs written to disk,
   buckets of --bucket-rows arms, the file read in batches of as many rows).
3. The real Upworthy log read whole vs only its mapped columns (what ``prepare`` does).

Writes scale_epoch.csv, scale_memory.csv and scale.png under logs/bench/scale/.
Usage: python benchmarks/bench_scale.py [--tests 150] [--rows 20000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import REPO, default_cfg

from pushgen.data.pipeline import prepare
from pushgen.data.synthetic import synthetic_ab_log
from pushgen.data.tokenize import tokenize_texts

SCALES = (1, 4, 16)

MEMORY_PROBE = r"""
import json, resource, sys, tempfile, time, tracemalloc
sys.path.insert(0, sys.argv[2])
from pushgen.data.pipeline import prepare
from pushgen.data.stream import prepare_out_of_core
from _common import default_cfg
cfg = default_cfg([f"data.path={sys.argv[1]}"])
mode, bucket_rows, batch_rows = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
import psutil
before = psutil.Process().memory_info().rss / 1024   # now, after the imports (ru_maxrss is in KiB too)
tracemalloc.start()
t0 = time.perf_counter()
if mode == "in_memory":
    stats = prepare(cfg.data, seed=0).stats
else:
    with tempfile.TemporaryDirectory() as out:
        stats = prepare_out_of_core(cfg.data, seed=0, out_dir=out, bucket_rows=bucket_rows, batch_rows=batch_rows)
seconds = time.perf_counter() - t0
_, peak = tracemalloc.get_traced_memory()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"mode": mode, "rows": stats["rows_read"], "pairs": sum(stats[f"pairs_{s}"] for s in ("train", "val", "test")),
                  "heap_peak_mb": peak / 2**20, "rss_growth_mb": (after - before) / 1024, "seconds": seconds}))
"""


def epoch_seconds(path: Path, threads: int) -> tuple[int, float]:
    import lightning as L

    from pushgen.modules.datamodule import PairDataModule
    from pushgen.modules.reward_module import RewardModule
    from pushgen.utils.config import to_plain

    cfg = default_cfg(["backbone=tiny_llama", f"data.path={path}"])
    prepared = prepare(cfg.data, seed=0)
    torch.manual_seed(0)
    module = RewardModule(to_plain(cfg.backbone), to_plain(cfg.reward), to_plain(cfg.loss), to_plain(cfg.optim))
    ids, _ = tokenize_texts(prepared.pooled, module.tokenizer, max_length=64, use_evidence=False, kind="decoder")
    train = prepared.split("train")
    dm = PairDataModule({"train": train, "val": prepared.split("val")}, ids, pad_id=module.tokenizer.pad_token_id,
                        batch_size=32, seed=0)
    times = {}

    class Clock(L.Callback):
        def on_train_epoch_start(self, *_):
            times["start"] = time.perf_counter()

        def on_train_epoch_end(self, *_):
            times["end"] = time.perf_counter()

    torch.set_num_threads(threads)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[Clock()])
    trainer.fit(module, datamodule=dm)
    return len(train), times["end"] - times["start"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tests", type=int, default=150, help="tests at 1x for the epoch curve")
    ap.add_argument("--rows", type=int, default=20000, help="arms at 1x for the memory curve (about 4 per test)")
    ap.add_argument("--bucket-rows", type=int, default=20000, help="out-of-core bucket size (arms)")
    ap.add_argument("--batch-rows", type=int, default=None,
                    help="out-of-core read batch (rows; default: --bucket-rows, so that what one step holds is "
                         "fixed by the settings, not by the file)")
    ap.add_argument("--modes", nargs="+", default=["in_memory", "out_of_core"], help="data preparations to measure")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parts", nargs="+", default=["epoch", "memory", "columns"])
    args = ap.parse_args()
    out = REPO / "logs" / "bench" / "scale"
    out.mkdir(parents=True, exist_ok=True)
    epoch_rows, memory_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        print("== time per epoch vs pairs (tiny Llama, batch 32, fp32)")
        for k in SCALES if "epoch" in args.parts else ():
            path = Path(tmp) / f"epoch_{k}.parquet"
            synthetic_ab_log(args.tests * k, seed=k).to_parquet(path)
            pairs, secs = epoch_seconds(path, args.threads)
            epoch_rows.append({"scale": k, "train_pairs": pairs, "epoch_s": secs, "us_per_pair": 1e6 * secs / pairs})
            print(f"  {k:2d}x: {pairs:6d} train pairs, epoch {secs:6.2f} s, {1e6 * secs / pairs:7.0f} us/pair")
        print(f"== peak memory of data preparation vs rows (fresh process per size; out of core: buckets of "
              f"{args.bucket_rows} arms)")
        for k in SCALES if "memory" in args.parts else ():
            path = Path(tmp) / f"rows_{k}.parquet"
            synthetic_ab_log(args.rows * k // 4, seed=k).to_parquet(path)
            for mode in args.modes:
                res = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path), str(REPO), mode, str(args.bucket_rows), str(args.batch_rows or args.bucket_rows)],
                                     capture_output=True, text=True, cwd=str(REPO / "benchmarks"), check=True)
                rec = json.loads(res.stdout.strip().splitlines()[-1])
                rec["scale"] = k
                memory_rows.append(rec)
                print(f"  {k:2d}x {mode:11s}: {rec['rows']:7d} rows -> {rec['pairs']:7d} pairs in {rec['seconds']:5.1f} s; "
                      f"heap peak {rec['heap_peak_mb']:7.1f} MB ({rec['heap_peak_mb'] * 2**20 / rec['rows']:5.0f} B/row), "
                      f"RSS growth {rec['rss_growth_mb']:7.1f} MB ({rec['rss_growth_mb'] * 2**20 / rec['rows']:5.0f} B/row)")

    import tracemalloc

    from pushgen.data.loading import read_table
    cfg = default_cfg()
    wanted = [c for c in cfg.data.columns.values() if c is not None]
    print("== the real Upworthy log: read whole vs mapped columns only")
    for label, cols in (("whole file", None), ("mapped columns", wanted)) if "columns" in args.parts else ():
        tracemalloc.start()
        table = read_table(cfg.data.path, columns=cols)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"  {label:15s}: {table.shape[1]:2d} columns, heap peak {peak / 2**20:6.1f} MB, "
              f"table {table.memory_usage(deep=True).sum() / 2**20:6.1f} MB")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    ep, mem = pd.DataFrame(epoch_rows), pd.DataFrame(memory_rows)
    if ep.empty or mem.empty:
        return
    ep.to_csv(out / "scale_epoch.csv", index=False)
    mem.to_csv(out / "scale_memory.csv", index=False)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep["train_pairs"], ep["epoch_s"], "o-")
    a.plot(ep["train_pairs"], ep["train_pairs"] * ep["epoch_s"].iloc[0] / ep["train_pairs"].iloc[0], "k:", label="linear")
    a.set(xlabel="training pairs", ylabel="seconds per epoch", title="epoch time vs pairs", xscale="log", yscale="log")
    a.legend()
    for mode, style in (("in_memory", "-"), ("out_of_core", "--")):
        part = mem[mem["mode"] == mode]
        b.plot(part["rows"], part["heap_peak_mb"], "o" + style, label=f"{mode}: heap peak")
        b.plot(part["rows"], part["rss_growth_mb"], "s" + style, label=f"{mode}: RSS growth")
    b.set(xlabel="rows (arms)", ylabel="MB", title="peak memory of data preparation", xscale="log", yscale="log")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "scale.png", dpi=120)
    print(f"wrote {out / 'scale_epoch.csv'}, {out / 'scale_memory.csv'}, {out / 'scale.png'}")


if __name__ == "__main__":
    main()
