"""refine: Common Crawl WARCs to pretraining data, as composable Dask stages."""

__version__ = "0.1.0"
