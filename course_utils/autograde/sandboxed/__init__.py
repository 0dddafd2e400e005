"""What runs inside the sandbox beside student code: the kernel's guard, the zygote that forks
kernels, and the Linux calls that confine them. Nothing here imports the grading side."""
