"""Kernels for untrusted notebooks: the sandbox's policy, the kernel manager that applies it,
kernels forked from a warm zygote, and kernels started ahead of their notebook."""
