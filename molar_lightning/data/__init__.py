"""Raw data sources, the canonical dataset, batching and the LightningDataModules."""
