"""Clustering methods: cluster assignments or prototypes as targets."""

from invprop.methods.clustering import deepcluster, pcl, swav

__all__ = ["deepcluster", "pcl", "swav"]
