"""The pull and push forces of the discriminative loss in 2D (De Brabandere et al., Fig. 1).

The forces are minus the gradients of the real loss
(:func:`labkit.losses.discriminative_loss`), obtained by autograd:

* pull, on every pixel: ``-dL_var/dx_i`` (Eq. 1), the total derivative: a
  pixel within ``delta_v`` of its centre has no pull of its own but still
  moves when the pixels outside drag the centre, which depends on it;
* push, on every cluster: ``-sum_{i in c} dL_dist/dx_i`` (Eq. 2), the force on
  a rigid translation of the cluster, i.e. on its centre; zero once centres are
  ``2 delta_d`` apart.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from labkit.errors import DataError
from labkit.losses.discriminative import discriminative_loss
from labkit.viz.overlay import instance_colors


def discriminative_forces(points_2d: Any, labels: Any, delta_v: float = 0.5, delta_d: float = 1.5) -> dict[str, np.ndarray]:
    """Pull and push forces on 2D embeddings.

    Args:
        points_2d: ``[N, 2]`` embeddings.
        labels: ``[N]`` instance ids, 0 = background (no force).

    Returns:
        ``ids [C]`` (sorted positive ids), ``centres [C, 2]``, ``pull [N, 2]``
        (per point) and ``push [C, 2]`` (per centre).
    """
    x = torch.as_tensor(np.asarray(points_2d, dtype=np.float64))
    lab = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    if x.ndim != 2 or x.shape[1] != 2 or lab.shape != x.shape[:1]:
        raise DataError(f"discriminative_forces: expected points [N,2] and labels [N], got {tuple(x.shape)} and {tuple(lab.shape)}")
    x.requires_grad_(True)
    terms = discriminative_loss(x.t()[None, :, None, :], lab[None, None, :], delta_v=delta_v, delta_d=delta_d)
    (var_grad,) = torch.autograd.grad(terms["var"], x, retain_graph=True, materialize_grads=True)
    (dist_grad,) = torch.autograd.grad(terms["dist"], x, materialize_grads=True)
    ids = torch.unique(lab[lab > 0])
    member = (lab[None, :] == ids[:, None]).double()  # [C, N]
    centres = member @ x.detach() / member.sum(dim=1, keepdim=True)
    push = member @ (-dist_grad)
    return {"ids": ids.numpy(), "centres": centres.numpy(), "pull": (-var_grad).numpy(), "push": push.numpy()}


def plot_discriminative_forces(
    points_2d: Any,
    labels: Any,
    delta_v: float = 0.5,
    delta_d: float = 1.5,
    ax: Axes | None = None,
) -> Axes:
    """Draw points, centres, ``delta_v`` circles (solid), ``2 delta_d`` circles
    (dashed: another centre inside is pushed away), pull arrows on points and
    push arrows on centres.

    Arrow lengths are scaled per force so the longest pull arrow is
    ``delta_v`` long and the longest push arrow ``delta_d`` long.

    Returns:
        The axes drawn into (a new figure's when ``ax`` is None).
    """
    forces = discriminative_forces(points_2d, labels, delta_v, delta_d)
    pts = np.asarray(points_2d, dtype=np.float64)
    lab = np.asarray(labels, dtype=np.int64)
    if ax is None:
        ax = Figure(figsize=(5, 5)).add_subplot()
    colours = instance_colors(forces["ids"])
    ax.scatter(*pts[lab == 0].T, s=12, c="lightgrey", label="background")
    for i, colour, centre in zip(forces["ids"], colours, forces["centres"]):
        ax.scatter(*pts[lab == i].T, s=14, color=colour)
        ax.add_patch(Circle(centre, delta_v, fill=False, color=colour, lw=1.2))
        ax.add_patch(Circle(centre, 2 * delta_d, fill=False, color=colour, lw=1.0, ls="--"))
        ax.scatter(*centre, marker="X", s=80, color=colour, edgecolors="black", zorder=3)
    _arrows(ax, pts, forces["pull"], delta_v, "black", "pull (var)")
    _arrows(ax, forces["centres"], forces["push"], delta_d, "tab:red", "push (dist)")
    ax.set_aspect("equal")
    ax.autoscale_view()
    ax.set_title(f"discriminative loss forces: delta_v={delta_v:g}, delta_d={delta_d:g}")
    ax.legend(loc="upper right", fontsize="small")
    return ax


def _arrows(ax: Axes, at: np.ndarray, force: np.ndarray, length: float, colour: str, label: str) -> None:
    longest = np.linalg.norm(force, axis=1).max(initial=0.0)
    if longest == 0:
        return
    scaled = force * (length / longest)
    ax.quiver(at[:, 0], at[:, 1], scaled[:, 0], scaled[:, 1], angles="xy", scale_units="xy", scale=1.0,
              color=colour, width=0.004, label=label)
