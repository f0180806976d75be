"""molar_lightning: Molar (arXiv 2412.18176) and its sequential-recommendation baselines on Lightning."""

__version__ = "0.1.0"
