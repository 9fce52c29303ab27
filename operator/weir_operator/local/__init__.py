"""`weir run`: ModelDeployments on one machine, driven by the operator's own core."""
