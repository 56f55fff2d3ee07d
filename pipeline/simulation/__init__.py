"""The SIMULATED demo night: alert packets, an AllWISE-like catalogue, light curves and stamps for training."""
