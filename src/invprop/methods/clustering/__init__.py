"""Clustering methods: cluster assignments or prototypes as targets."""

from invprop.methods.clustering import deepcluster, pcl, sela, swav

__all__ = ["deepcluster", "pcl", "sela", "swav"]
