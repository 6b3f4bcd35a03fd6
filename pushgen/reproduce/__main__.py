"""python -m pushgen.reproduce STUDY [--from-runs DIR ...] [--out DIR] [-- hydra overrides ...]"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from pushgen.reproduce import STUDIES
from pushgen.reproduce.common import find_runs, write_provenance
from pushgen.utils.config import REPO_ROOT

log = logging.getLogger("pushgen.reproduce")


def _study_list() -> str:
    lines = ["studies (conf/experiment/<study>.yaml holds each sweep; reward_optuna: conf/hparams_search/):"]
    for s in STUDIES.values():
        missing = s.missing()
        state = "ready" if not missing else f"needs {', '.join(missing)} (not in this checkout; --from-runs still works)"
        lines.append(f"  {s.name:22s} {s.reproduces}\n  {'':22s} runs: {s.entry}; {state}")
    return "\n".join(lines)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pushgen.reproduce", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Rebuild a study's figures and tables with one command.",
                                epilog=_study_list() + "\n\nexamples:\n"
                                "  python -m pushgen.reproduce loss_ablation            # run the sweep, then the report\n"
                                "  python -m pushgen.reproduce fig4_reward_analysis --from-runs logs/reward/runs/RUN\n"
                                "  python -m pushgen.reproduce loss_ablation -- trainer.limit_train_batches=20")
    p.add_argument("study", choices=sorted(STUDIES), metavar="STUDY", help="one of: " + ", ".join(STUDIES))
    p.add_argument("--from-runs", nargs="+", metavar="DIR", help="build the report from these finished run folders "
                   "(or sweep folders holding them) instead of running the sweep")
    p.add_argument("--out", metavar="DIR", help="report folder (default: reports/STUDY; its files are rebuilt)")
    p.add_argument("--sweep-dir", metavar="DIR", help="where the sweep's runs go (default: logs/<study>/<date>)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples over tests (default 1000)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides passed to the sweep (after --)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse(sys.argv[1:] if argv is None else argv)
    study = STUDIES[args.study]
    out = Path(args.out) if args.out else REPO_ROOT / "reports" / study.name
    command = None
    if args.from_runs:
        sources = args.from_runs
    else:
        missing = study.missing()
        if missing:
            print(f"{study.name} runs {study.entry}, and this checkout lacks {', '.join(missing)}: the study cannot "
                  f"run its sweep here. Build the report from finished runs with --from-runs DIR.", file=sys.stderr)
            return 2
        sweep = Path(args.sweep_dir) if args.sweep_dir else (
            REPO_ROOT / "logs" / study.name / datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
        cmd = study.sweep_command(sweep, args.overrides)
        command = "python " + shlex.join([study.entry, *cmd[2:]])  # as a user would type it
        log.info("running: %s", command)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
        done = subprocess.run(cmd, cwd=REPO_ROOT, env=env)
        if done.returncode != 0:
            print(f"the sweep failed (exit {done.returncode}); finished jobs are in {sweep}: "
                  f"rebuild from them with --from-runs {sweep}", file=sys.stderr)
            return done.returncode
        sources = [str(sweep)]
    runs = find_runs(sources, include_failed=study.include_failed)
    out.mkdir(parents=True, exist_ok=True)
    kwargs = {"n_boot": args.n_boot} if "n_boot" in study.summarise.__code__.co_varnames else {}
    result = study.summarise(runs, out, **kwargs)
    write_provenance(out, study.name, runs, command, study.entry, sources)
    log.info("%s: %d runs -> %s", study.name, result["runs"], out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
