"""Data-parallel training: 2 CPU processes (gloo) at batch b give the same model as 1 process at 2b."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from conftest import REPO, ab_table, data_cfg
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from pushgen.data.collate import TestGroupedBatchSampler
from pushgen.data.pipeline import prepare
from pushgen.data.tokenize import tokenize_texts
from pushgen.modules.datamodule import PairDataModule
from pushgen.modules.reward_module import RewardModule

BACKBONE = {"source": "tiny", "kind": "decoder", "padding_side": "right", "dtype": "float32",
            "tiny": {"arch": "llama", "hidden_size": 32, "num_layers": 2, "num_heads": 4, "vocab_size": 256, "seed": 0}}
STEPS = 6


def _codes(n_tests: int = 7, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.repeat(np.arange(n_tests), rng.integers(1, 6, n_tests))


@pytest.mark.parametrize("shuffle", [True, False])
def test_ranks_split_the_global_batches_of_one_process(shuffle):
    codes = _codes()
    single = list(TestGroupedBatchSampler(codes, batch_size=6, seed=3, shuffle=shuffle))
    ranks = [list(TestGroupedBatchSampler(codes, batch_size=3, seed=3, shuffle=shuffle, num_replicas=2, rank=r))
             for r in (0, 1)]
    for r, batches in enumerate(ranks):
        assert len(batches) == len(TestGroupedBatchSampler(codes, 3, seed=3, shuffle=shuffle, num_replicas=2, rank=r))
    if shuffle:  # training: every rank steps the same number of times, on its slice of the global batch
        assert len(ranks[0]) == len(ranks[1]) == len(single)
    for step, batch in enumerate(single):
        parts = [ranks[r][step] for r in (0, 1) if step < len(ranks[r])]
        assert sorted(i for part in parts for i in part) == sorted(batch)


@pytest.fixture(scope="module")
def pair_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddp") / "ab.parquet"
    ab_table(n_tests=30).to_parquet(path)
    prepared = prepare(data_cfg(path, pairs={"min_impressions": 0, "max_pvalue": 1.0, "fdr_q": None,
                                             "weighting": "confidence"}), seed=0)
    probe = RewardModule(BACKBONE, {}, {}, {"lr": 1e-3})
    ids, _ = tokenize_texts(prepared.pooled, probe.tokenizer, max_length=32, use_evidence=False, kind="decoder")
    return prepared, ids, probe.tokenizer.pad_token_id


def _fit(pair_data, trainer_overrides: list[str], batch: int) -> dict[str, torch.Tensor]:
    prepared, ids, pad = pair_data
    L.seed_everything(0, verbose=False)
    # Weighted loss on purpose: ranks then hold unequal weight, which the global normalisation must undo.
    module = RewardModule(BACKBONE, {}, {"name": "bradley_terry", "use_weights": True},
                          {"lr": 3e-3, "warmup_ratio": 0.0})
    dm = PairDataModule({s: prepared.split(s) for s in ("train", "val")}, ids, pad_id=pad, batch_size=batch, seed=0)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=trainer_overrides + [
            f"trainer.max_steps={STEPS}", "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false"])
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    return {k: v.detach().clone() for k, v in module.model.state_dict().items()}


@pytest.mark.timeout(120)
def test_ddp_on_two_cpu_processes_matches_one_process_at_the_same_global_batch(pair_data):
    L.seed_everything(0, verbose=False)
    init = RewardModule(BACKBONE, {}, {}, {"lr": 1e-3}).model.state_dict()
    one = _fit(pair_data, ["trainer=cpu"], batch=8)
    # trainer=ddp is the GPU config; on CPU it runs over gloo. The fork launcher rather than the
    # script launcher: the latter re-runs sys.argv, which under pytest would be pytest itself.
    two = _fit(pair_data, ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                           "trainer.precision=32-true", "trainer.strategy=ddp_fork"], batch=4)
    half = _fit(pair_data, ["trainer=cpu"], batch=4)

    def distance(a, b):
        # The head's bias cancels in chosen - rejected, so its gradient is float noise only, which Adam
        # scales up to lr-sized steps; it differs by machine (2.9e-4 on one CPU, 4e-6 on another).
        return max(float((a[k] - b[k]).abs().max()) for k in a if k != "head.bias")

    assert distance(one, init) > 1e-3                 # training moved the weights
    assert distance(one, two) < 1e-4                  # 2 x 4 on two processes == 8 on one (seen: 4e-6)
    assert distance(one, half) > 100 * distance(one, two)   # and batch 4 on one process is not the same


def test_gpu_engine_configs_name_strategies_lightning_knows():
    from lightning.pytorch.strategies import FSDPStrategy, StrategyRegistry

    strategies = {}
    for option in ("ddp", "fsdp", "deepspeed"):
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose(config_name="train", overrides=[f"trainer={option}", "trainer.num_nodes=2"])
        assert cfg.trainer.num_nodes == 2 and cfg.trainer.use_distributed_sampler is False
        strategies[option] = cfg.trainer.strategy
    assert strategies["ddp"] in StrategyRegistry and strategies["deepspeed"] in StrategyRegistry
    assert isinstance(instantiate(strategies["fsdp"]), FSDPStrategy)
