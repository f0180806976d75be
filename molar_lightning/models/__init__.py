"""Plain ``torch.nn.Module`` models: no Lightning and no data loading in here."""
