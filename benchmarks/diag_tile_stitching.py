"""Diagnostic: matching accuracy of a folder-trained run under different tile-stitching rules.

For ``bench_own_images.py`` runs (``--data`` as there): each val/test image is
predicted in the run's 128 x 128 tiles (:func:`labkit.evaluation.tile_windows`),
the network and the decoder run once per tile, and the tiles are stitched with
:func:`labkit.evaluation.stitch_tiles` for each ``link_band`` given (``none`` =
the current rule, linking over the whole overlap).  Prints the matching
accuracy @IoU 0.5 pooled over the images of each split, and per image.

Example::

    python benchmarks/diag_tile_stitching.py RUN/recurrent/model.pt --decode '{"min_area": 32}' --bands none 16 8
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from labkit.data import load_dataset
from labkit.evaluation import stitch_tiles, tile_windows, window_outputs
from labkit.metrics import matching_accuracy
from labkit.metrics.inputs import read_pairs
from labkit.train import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, default=Path("data/cache/own_images"))
    parser.add_argument("--decode", default="{}", help="decode parameters (JSON)")
    parser.add_argument("--bands", nargs="+", default=["none", "16", "8"])
    parser.add_argument("--tile", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    method, model, _ = load_checkpoint(args.checkpoint, device="cpu")
    params = json.loads(args.decode)
    for split in ("val", "test"):
        dataset = load_dataset(str(args.data / split), split="test")
        tiles = []
        for k in range(len(dataset)):
            sample = dataset[k]
            image = torch.as_tensor(sample["image"]).float()
            windows = tile_windows(image.shape[-2:], args.tile)
            decoded = method.decode(window_outputs(model, image, windows), **params)
            tiles.append((decoded, windows, {"instances": torch.as_tensor(sample["instances"]).long()}))
        for band in args.bands:
            link = None if band == "none" else int(band)
            preds = [stitch_tiles(d, w, link_band=link) for d, w, _ in tiles]
            pairs = read_pairs(preds, [g for _, _, g in tiles])
            pooled = matching_accuracy([p for p, _ in pairs], [g for _, g in pairs], iou=0.5)
            each = [matching_accuracy([p], [g], iou=0.5) for p, g in pairs]
            print(f"{split} link_band {band}: matching accuracy {pooled:.3f} (per image "
                  f"{', '.join(f'{x:.3f}' for x in each)})", flush=True)


if __name__ == "__main__":
    main()
