"""hdrprep: training data for single-image HDR reconstruction.

Importing the package is cheap: it imports neither dask, numba nor torch.
"""

__version__ = "0.1.0"
