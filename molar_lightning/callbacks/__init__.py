"""Lightning callbacks: ranking evaluation and results tables."""
