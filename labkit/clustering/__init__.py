"""Clustering of pixel embeddings: the mean-shift family.

* :class:`MeanShift` / :func:`mean_shift`: scikit-learn's estimator in PyTorch
  (flat, Gaussian and von Mises-Fisher kernels, optional pixel coordinates),
  fast enough for a live bandwidth slider; :func:`estimate_bandwidth`.
* :func:`seeded_mean_shift`: De Brabandere et al.'s one-instance-at-a-time variant.
* :class:`RecurrentMeanShift` / :func:`recurrent_mean_shift`: Kong & Fowlkes's
  differentiable recurrent mean shift (Eq. 3).
* :func:`mean_shift_1d`: exact 1-D mean shift of DVIS's scalar label maps;
  :func:`discretize`: DVIS's label map -> pooled candidate instances.
* :func:`cluster_map`, :func:`score_instances`, :func:`bandwidth_sweep`,
  :func:`best_bandwidth`: embedding map -> instance map -> metrics, per bandwidth.
* :func:`dense_crf` / :func:`crf_inference_label`: a fully connected CRF (Krähenbühl & Koltun), IRNet's
  refinement of confident CAM areas.
* :func:`instance_radii` / :func:`absorb_thin_instances`: how thick each instance is; thin bands between
  touching objects (a mean-shift artefact) given to their neighbours.
* :func:`thomson_points` / :func:`thomson_energy`: even spreads of points on a sphere (HLE's class means).
* :func:`spatial_features`, :func:`embedding_points`, :func:`pixel_coordinates`;
  :func:`labkit.clustering.demo.synthetic_embedding_map` for teaching.
"""
from labkit.clustering.meanshift import MeanShift, estimate_bandwidth, mean_shift
from labkit.clustering.dense_crf import crf_inference_label, dense_crf
from labkit.clustering.discretize import Candidates, discretize
from labkit.clustering.meanshift1d import mean_shift_1d
from labkit.clustering.recurrent import RecurrentMeanShift, delta_from_margin, recurrent_mean_shift
from labkit.clustering.seeded import seeded_mean_shift
from labkit.clustering.spatial import embedding_points, pixel_coordinates, spatial_features
from labkit.clustering.thin import absorb_thin_instances, instance_radii
from labkit.clustering.thomson import thomson_energy, thomson_points
from labkit.clustering.sweep import bandwidth_sweep, best_bandwidth, cluster_map, score_instances

__all__ = [
    "Candidates",
    "MeanShift",
    "RecurrentMeanShift",
    "absorb_thin_instances",
    "bandwidth_sweep",
    "best_bandwidth",
    "cluster_map",
    "crf_inference_label",
    "delta_from_margin",
    "dense_crf",
    "discretize",
    "embedding_points",
    "estimate_bandwidth",
    "instance_radii",
    "mean_shift",
    "mean_shift_1d",
    "pixel_coordinates",
    "recurrent_mean_shift",
    "score_instances",
    "seeded_mean_shift",
    "spatial_features",
    "thomson_energy",
    "thomson_points",
]
