"""TPU support that needs no TPU: compile a config for a pod slice from a CPU machine."""
