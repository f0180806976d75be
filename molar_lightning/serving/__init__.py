"""Taking a trained model out of the training loop: ``molar export``, ``molar recommend``, ``molar serve``."""
