"""A local DigitalOcean API simulator, for demos, tests and benchmarks."""
