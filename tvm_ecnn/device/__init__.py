"""Device-side infrastructure: emulated aarch64 RPC device, cross-export, OpenCL kernels on PoCL."""
