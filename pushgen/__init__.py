"""pushgen: generate push notifications with LLMs and pick the best with a reward model learned from A/B tests."""

__version__ = "0.1.0"
