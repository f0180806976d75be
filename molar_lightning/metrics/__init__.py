"""TorchMetrics metrics for full-ranking evaluation."""
