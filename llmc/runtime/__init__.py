"""What runs artifacts above any one target: the generation loop, perplexity."""
