"""streamclust: clustering for data that does not fit in memory or never stops arriving."""

from .anomaly import DensityAnomalyDetector, QuantileSketch
from .bayesian_mixture import StreamingBayesianGaussianMixture
from .exceptions import (
    DataError,
    DependencyError,
    ModelFileError,
    ParameterError,
    SchedulerError,
    SourceError,
    StateError,
    StreamclustError,
)
from .gmm import StreamingGaussianMixture
from .kmeans import StreamingKMeans
from .persistence import load
from .runtime import get_client
from .sample_clusterer import SampleClusterer
from .selection import GMMSweep, KMeansSweep, sweep_gmm, sweep_kmeans
from .sources import (
    ArraySource,
    BatchDirSource,
    DaskSource,
    LazyArraySource,
    NpySource,
    ParquetSource,
    RawSource,
    Source,
    ZarrSource,
    open_source,
    write_zarr,
)
from .version import __version__

__all__ = [
    "ArraySource",
    "BatchDirSource",
    "DaskSource",
    "DataError",
    "DependencyError",
    "DensityAnomalyDetector",
    "GMMSweep",
    "KMeansSweep",
    "LazyArraySource",
    "ModelFileError",
    "NpySource",
    "ParameterError",
    "ParquetSource",
    "QuantileSketch",
    "RawSource",
    "SchedulerError",
    "Source",
    "SourceError",
    "StateError",
    "StreamclustError",
    "StreamingBayesianGaussianMixture",
    "StreamingGaussianMixture",
    "StreamingKMeans",
    "SampleClusterer",
    "ZarrSource",
    "__version__",
    "get_client",
    "sweep_gmm",
    "sweep_kmeans",
    "load",
    "open_source",
    "write_zarr",
]
