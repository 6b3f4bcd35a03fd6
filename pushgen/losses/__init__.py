from pushgen.losses.pairwise import LOSSES, pairwise_loss

__all__ = ["LOSSES", "pairwise_loss"]
