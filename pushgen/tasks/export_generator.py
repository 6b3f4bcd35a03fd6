"""Export the generator of one checkpoint of an SFT run (not the run's best by validation loss).

    python -m pushgen.tasks.export_generator run_dir=logs/sft/runs/<run> ckpt=<file in its checkpoints/>
        [out=<run_dir>/exports/<checkpoint name>]

sft.py exports the checkpoint with the lowest validation loss; a study may pick another one by what
it measures downstream (adherence on the validation split, say). The result is a folder shaped like
a finished run (``config_resolved.yaml``, ``metrics.json`` with ``exported_from``, ``generator/``), so
``python -m pushgen.evaluation.controllability run_dir=<out>`` and ``generate.py
generator.path=<out>/generator`` take it as they take the run. LoRA checkpoints hold the adapter,
full fine-tuning ones the whole model; either must match the run's generator key for key.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from pushgen.utils.checkpoint import CheckpointMismatch, NotACheckpoint, load_checkpoint_file
from pushgen.utils.run import atomic_dir, write_json


def export_checkpoint(run_dir: str | Path, ckpt: str | Path, out: str | Path | None = None) -> Path:
    from pushgen.modules.sft_module import load_generator

    run_dir, ckpt = Path(run_dir), Path(ckpt)
    if not (run_dir / "config_resolved.yaml").is_file() or not (run_dir / "generator").is_dir():
        raise FileNotFoundError(f"run_dir={run_dir} is not a finished sft.py run folder "
                                "(it needs config_resolved.yaml and generator/)")
    if not ckpt.is_file() and (run_dir / "checkpoints" / ckpt).is_file():
        ckpt = run_dir / "checkpoints" / ckpt
    if not ckpt.is_file():
        raise FileNotFoundError(f"ckpt={ckpt} {'is a folder, not a file' if ckpt.is_dir() else 'does not exist'}; "
                                f"the run's checkpoints: {sorted(p.name for p in (run_dir / 'checkpoints').glob('*.ckpt'))}")
    ckpt = ckpt.resolve()
    out = Path(out) if out is not None else run_dir / "exports" / ckpt.stem
    if out.exists():
        raise FileExistsError(f"out={out} exists; remove it or give another out=")

    model, _ = load_generator(run_dir / "generator")
    # The module holds the generator as `model`; a LoRA checkpoint holds only the adapter's tensors.
    state = {k[len("model."):]: v for k, v in load_checkpoint_file(ckpt)["state_dict"].items()
             if k.startswith("model.")}
    own = model.state_dict()
    expected = {k for k in own if "lora_" in k} if any("lora_" in k for k in own) else set(own)
    if set(state) != expected:
        extra, missing = sorted(set(state) - expected), sorted(expected - set(state))
        parts = [f"{len(names)} tensor(s) {what} (e.g. {names[:2]})"
                 for what, names in (("missing", missing), ("unexpected", extra)) if names]
        raise CheckpointMismatch(f"{ckpt} does not fit the generator of {run_dir}: {', '.join(parts)}")
    model.load_state_dict(state, strict=False)

    # The run's data and SFT counts hold for every checkpoint; its best_ckpt / best_val_loss do not.
    source = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    metrics = {"exported_from": str(ckpt), "source_run": str(run_dir.resolve()),
               "generator": str(out.resolve() / "generator"),
               **{k: source[k] for k in ("data", "sft") if k in source}}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp:                                     # never a half-written export
        shutil.copytree(run_dir / "generator", tmp / "generator")   # tokenizer and prompt metadata
        model.save_pretrained(tmp / "generator")                    # then this checkpoint's weights
        shutil.copy(run_dir / "config_resolved.yaml", tmp / "config_resolved.yaml")
        write_json(tmp / "metrics.json", metrics)
    return out


def main(argv: list[str]) -> None:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    args = dict(a.split("=", 1) for a in argv if "=" in a)
    unknown = set(args) - {"run_dir", "ckpt", "out"}
    if unknown or not {"run_dir", "ckpt"} <= set(args):
        raise SystemExit(f"unknown argument(s) {sorted(unknown)}\n{__doc__}" if unknown
                         else f"run_dir= and ckpt= are required\n{__doc__}")
    try:
        out = export_checkpoint(args["run_dir"], args["ckpt"], args.get("out"))
    except (FileNotFoundError, FileExistsError, CheckpointMismatch, NotACheckpoint) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"exported {args['ckpt']} -> {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
