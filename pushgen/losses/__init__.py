from pushgen.losses.registry import LOSSES, LossSpec, get_loss, pairwise_loss, reward_loss

__all__ = ["LOSSES", "LossSpec", "get_loss", "pairwise_loss", "reward_loss"]
