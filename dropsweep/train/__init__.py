"""Training a batch of models: the one epoch loop, checkpoints, memory, devices, retry in halves."""
