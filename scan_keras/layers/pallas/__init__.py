"""Stacked Cross Attention as one fused Pallas (Triton) kernel, for JAX on a
GPU: `kernel.similarities`, planned by `tiles`. Importing this package
imports no JAX; `kernel` does."""
