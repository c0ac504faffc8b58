"""Discriminative loss of De Brabandere, Neven & Van Gool (2017), arXiv:1708.02551.

Pixels of one instance are pulled towards their cluster centre (variance term),
cluster centres are pushed apart (distance term) and centres are drawn weakly
towards the origin (regularisation term).  With ``C`` clusters, ``N_c`` pixels
in cluster ``c``, embeddings ``x_i``, centres ``mu_c`` and ``[x]_+ = max(0, x)``:

* Eq. (1)  ``L_var  = 1/C sum_c 1/N_c sum_{i in c} [||mu_c - x_i|| - delta_v]_+^2``
* Eq. (2)  ``L_dist = 1/(C(C-1)) sum_{cA != cB} [2 delta_d - ||mu_cA - mu_cB||]_+^2``
* Eq. (3)  ``L_reg  = 1/C sum_c ||mu_c||``
* Eq. (4)  ``L = alpha L_var + beta L_dist + gamma L_reg``

Equation numbers are those of the arXiv paper (the extraction in
``shared/papers`` lost them).  Choices, where the paper and the authors' code
leave room:

* Defaults ``delta_v=0.5, delta_d=1.5, alpha=beta=1, gamma=0.001``: the values
  of the authors' code and of the arXiv paper's experiments (the short
  version's text gives no numbers).  ``delta_d > 2 delta_v`` makes every pixel
  closer to its own cluster's pixels than to any other cluster's, so a
  threshold of ``delta_v`` around a pixel recovers its instance at zero loss.
  (The paper's prose says "further apart than 2 delta_v"; Eq. (2) and the code
  say ``2 delta_d``, which we follow.)
* Squared hinges in Eq. (1) and (2) and an unsquared norm in Eq. (3), as in
  both the paper and the code.
* Per semantic class ("we apply our loss function independently on each
  semantic class so that instances from different classes are free to occupy
  the same feature space"): when ``semantic`` is given and ``per_class`` is
  true, a cluster is a (class, instance id) pair; Eq. (1)-(3) are evaluated
  over the clusters of each class separately and the three terms are averaged
  over the classes present in the image.  Instances of different classes
  therefore never push each other.  A class with one cluster has
  ``L_dist = 0``.
* Pixels with ``instances == 0`` (background) or ``semantic == ignore_index``
  take no part.  Each batch item's terms are computed on its own and averaged
  over the ``B`` items; an item without any instance contributes zero (the
  result stays attached to the graph).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from labkit.errors import DataError


def discriminative_loss(
    embedding: Tensor,
    instances: Tensor,
    semantic: Tensor | None = None,
    *,
    delta_v: float = 0.5,
    delta_d: float = 1.5,
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 0.001,
    norm: int | float = 2,
    per_class: bool = True,
    ignore_index: int = 255,
) -> dict[str, Tensor]:
    """The discriminative loss, Eq. (1)-(4), averaged over the batch.

    Args:
        embedding: float ``[B, D, H, W]`` pixel embeddings.
        instances: int ``[B, H, W]`` instance ids, 0 = background.
        semantic: optional int ``[B, H, W]`` class per pixel, ``ignore_index``
            = ignore.  Used to exclude ignored pixels and, with ``per_class``,
            to apply the loss per class.
        delta_v: pull margin of Eq. (1).
        delta_d: push margin of Eq. (2) (centres closer than ``2 delta_d`` repel).
        alpha, beta, gamma: weights of Eq. (4).
        norm: order of the vector norm used for every distance (2 = Euclidean).
        per_class: apply the loss per semantic class (needs ``semantic``).
        ignore_index: semantic value of ignored pixels.

    Returns:
        ``{"var", "dist", "reg", "loss"}``, scalar tensors.
    """
    _check_shapes(embedding, instances, semantic)
    per_item = []
    for b in range(embedding.shape[0]):
        sem_b = None if semantic is None else semantic[b]
        per_item.append(
            _item_terms(
                embedding[b], instances[b], sem_b,
                delta_v=delta_v, delta_d=delta_d, norm=norm,
                per_class=per_class, ignore_index=ignore_index,
            )
        )
    var, dist, reg = torch.stack(per_item).mean(dim=0)
    loss = alpha * var + beta * dist + gamma * reg
    return {"var": var, "dist": dist, "reg": reg, "loss": loss}


class DiscriminativeLoss(nn.Module):
    """Module form of :func:`discriminative_loss`; keyword arguments are its options."""

    def __init__(self, **options: float | int | bool) -> None:
        super().__init__()
        self.options = options

    def forward(
        self, embedding: Tensor, instances: Tensor, semantic: Tensor | None = None
    ) -> dict[str, Tensor]:
        return discriminative_loss(embedding, instances, semantic, **self.options)


def _item_terms(
    emb: Tensor,
    inst: Tensor,
    sem: Tensor | None,
    *,
    delta_v: float,
    delta_d: float,
    norm: int | float,
    per_class: bool,
    ignore_index: int,
) -> Tensor:
    """``[3]`` tensor (var, dist, reg) of one image: ``emb [D,H,W]``, ``inst [H,W]``."""
    dim = emb.shape[0]
    x = emb.reshape(dim, -1).t()  # [P, D]
    inst = inst.reshape(-1)
    valid = inst > 0
    if sem is not None:
        sem = sem.reshape(-1)
        valid &= sem != ignore_index
    if not valid.any():
        return emb.sum() * 0.0 + emb.new_zeros(3)
    x, inst = x[valid], inst[valid]
    cls = sem[valid] if (sem is not None and per_class) else torch.zeros_like(inst)

    # Clusters are (class, instance) pairs; `cluster` maps each pixel to one.
    keys, cluster = torch.unique(torch.stack([cls, inst], dim=1), dim=0, return_inverse=True)
    n_clusters = keys.shape[0]
    counts = torch.zeros(n_clusters, dtype=x.dtype, device=x.device).index_add_(
        0, cluster, torch.ones_like(x[:, 0])
    )
    centres = x.new_zeros(n_clusters, dim).index_add_(0, cluster, x) / counts[:, None]

    # Eq. (1): per-cluster mean of the squared hinge on the distance to the centre.
    pull = torch.relu(torch.linalg.vector_norm(centres[cluster] - x, ord=norm, dim=1) - delta_v) ** 2
    var_c = x.new_zeros(n_clusters).index_add_(0, cluster, pull) / counts

    # Eq. (3): norm of each centre.
    reg_c = torch.linalg.vector_norm(centres, ord=norm, dim=1)

    # Per-class averages; `klass` maps each cluster to its class.
    _, klass = torch.unique(keys[:, 0], return_inverse=True)
    n_classes = int(klass.max()) + 1
    per_class_count = x.new_zeros(n_classes).index_add_(0, klass, torch.ones_like(reg_c))
    var_k = x.new_zeros(n_classes).index_add_(0, klass, var_c) / per_class_count
    reg_k = x.new_zeros(n_classes).index_add_(0, klass, reg_c) / per_class_count

    # Eq. (2): ordered pairs of distinct clusters of the same class.
    pair = (klass[:, None] == klass[None, :]) & ~torch.eye(n_clusters, dtype=torch.bool, device=x.device)
    a, b = pair.nonzero(as_tuple=True)
    push = torch.relu(2 * delta_d - torch.linalg.vector_norm(centres[a] - centres[b], ord=norm, dim=1)) ** 2
    n_pairs = per_class_count * (per_class_count - 1)
    dist_k = x.new_zeros(n_classes).index_add_(0, klass[a], push) / n_pairs.clamp(min=1)

    return torch.stack([var_k.mean(), dist_k.mean(), reg_k.mean()])


def _check_shapes(embedding: Tensor, instances: Tensor, semantic: Tensor | None) -> None:
    if embedding.ndim != 4:
        raise DataError(f"discriminative_loss: embedding must be [B,D,H,W], got shape {tuple(embedding.shape)}")
    if embedding.shape[0] == 0:
        raise DataError("discriminative_loss: empty batch (B = 0)")
    expected = (embedding.shape[0], *embedding.shape[2:])
    if tuple(instances.shape) != expected:
        raise DataError(
            f"discriminative_loss: instances shape {tuple(instances.shape)} does not match "
            f"embedding {tuple(embedding.shape)} (expected {expected})"
        )
    if semantic is not None and tuple(semantic.shape) != expected:
        raise DataError(
            f"discriminative_loss: semantic shape {tuple(semantic.shape)} does not match "
            f"embedding {tuple(embedding.shape)} (expected {expected})"
        )
