"""Clustering methods: cluster assignments or prototypes as targets."""

from invprop.methods.clustering import deepcluster, deepercluster, pcl, sela, swav

__all__ = ["deepcluster", "deepercluster", "pcl", "sela", "swav"]
