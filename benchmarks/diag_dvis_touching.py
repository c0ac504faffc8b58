"""Does a trained ``dvis`` model give touching instances different label values?

DVIS (Sec. 3) separates instances by the value of one channel: two touching
objects are told apart only if their values differ by the margin ``m2`` (1),
and the 1-D mean shift at bandwidth 0.9 / 0.4 merges values closer than about
0.5.  For every pair of ground-truth instances that touch (within 2 pixels),
this prints how often the medians of their predicted label values lie less
than 0.5 and less than ``m2`` apart, and, per instance, the spread of its
values (10th to 90th percentile): a small spread with many close pairs means
the plateaus are flat but touching objects share a value (a colouring the
network did not learn), not that the values drift inside an object.
It also prints the map's 3x3 range (max - min) on the pixels where two
touching instances meet and inside the instances (2 pixels from their
edge): what ``edge_threshold`` cuts at.

Usage::

    python benchmarks/diag_dvis_touching.py RUN_DIR/model.pt DATA [DATA ...]

``DATA``: an instance folder (``DIR`` or ``DIR/images``) or ``synthetic:NAME:SPLIT``.
Figures: benchmarks/RESULTS.md, own-images section.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy import ndimage as ndi

from labkit.data import load_dataset
from labkit.methods.dvis import label_map
from labkit.train import load_checkpoint


def touching_pairs(instances: np.ndarray, gap: int = 2) -> list[tuple[int, int]]:
    """Pairs ``(a, b)``, ``a < b``, of instance ids whose masks come within ``gap`` pixels."""
    pairs = set()
    for a in np.unique(instances[instances > 0]):
        ring = ndi.binary_dilation(instances == a, iterations=gap) & (instances > 0) & (instances != a)
        pairs.update((int(a), int(b)) for b in np.unique(instances[ring]) if b > a)
    return sorted(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)
    _, model, _ = load_checkpoint(args.checkpoint)
    model.eval()
    for data in args.data:
        dataset = load_dataset(data)
        differences, spreads, border_range, inner_range = [], [], [], []
        for i in range(len(dataset)):
            sample = dataset[i]
            with torch.no_grad():
                f = label_map(model(sample["image"][None].float()))[0].numpy()
            instances = sample["instances"].numpy()
            median = {int(k): float(np.median(f[instances == k])) for k in np.unique(instances[instances > 0])}
            spreads += [float(np.subtract(*np.percentile(f[instances == k], [90, 10]))) for k in median]
            differences += [abs(median[a] - median[b]) for a, b in touching_pairs(instances)]
            local_range = ndi.maximum_filter(f, 3) - ndi.minimum_filter(f, 3)
            for k in median:
                own = instances == k
                other = ndi.binary_dilation(own) & (instances > 0) & ~own
                border_range.append(local_range[own & ndi.binary_dilation(other)])
                inner_range.append(local_range[ndi.binary_erosion(own, iterations=2)])
        d, s = np.array(differences), np.array(spreads)
        print(f"{data}: {len(d)} touching pairs, label medians < 0.5 apart {np.mean(d < 0.5):.2f}, "
              f"< m2 = 1 apart {np.mean(d < 1):.2f}; {len(s)} instances, 10-90% spread median "
              f"{np.median(s):.2f}, > 0.9 for {np.mean(s > 0.9):.2f}")
        border, inner = np.concatenate(border_range), np.concatenate(inner_range)
        print(f"  3x3 range where touching instances meet: 10/50% {np.percentile(border, 10):.2f} / "
              f"{np.median(border):.2f}; inside: 50/90/99% {np.median(inner):.2f} / {np.percentile(inner, 90):.2f} / "
              f"{np.percentile(inner, 99):.2f}")


if __name__ == "__main__":
    main()
