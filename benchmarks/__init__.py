"""Speed, memory and learning measurements (see benchmarks/README.md). Each one runs as a module of
this package from the repository root, e.g. ``python -m benchmarks.forward --tiny``."""
