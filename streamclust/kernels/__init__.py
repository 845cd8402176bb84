"""Pure NumPy kernels: ``(state, block) -> statistics`` functions with no Dask and no
estimator, run by the runtime wherever the work is."""
