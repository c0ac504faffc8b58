"""Why do the thing classes of ``panoptic`` / ``shapes`` go unlearnt? Isolated training runs that tell.

Each mode trains from scratch on freshly generated 64 x 64 scenes (a new batch
of 8 every step, so nothing can be memorised) and prints, every 250 steps, the
test recall of every class (50 fixed ``panoptic`` test scenes, pixel-wise
arg-max) or, for ``cam``, the image-label loss beside the label prior:

* ``semantic``: a UNet (width 16, depth 3) with a ``linear`` 1x1 head or HLE's
  nearest-``class_means`` readout (Eq. 9), trained by ``ce`` or ``lovasz``
  (Lovász-softmax, Eq. 6): can the lab's network learn the classes at all?
* ``hle``: the ``hle`` method's own model and loss (Eq. 16), with
  ``--set`` overrides (e.g. ``class_mean_weight=0 semantic_loss=cross_entropy
  space=split``): does the joint training learn them?  ``--terms`` trains on
  some terms of Eq. 16 only, weighted (``seg=1 seg_mean=1``: the semantic
  part alone; ``seg=1 ins=0.1 ...``): which term keeps the classes from forming?
  ``--terms-until STEP`` switches to the whole loss after STEP: do classes
  learnt first survive the joint training?
* ``cam``: IRNet's stage 1 alone (class maps, global average pooling,
  multi-label soft margin) on ``shapes`` image labels.
* ``means RUN ...``: the pairwise cosines of a trained ``hle`` run's class
  means (thing means at cosine ~1 have collapsed onto one point: the
  readout can no longer tell those classes apart).

``--schedule``: ``cosine`` (labkit's default) or ``onecycle`` (warm-up, see
:func:`labkit.train.lr_factor`).  Figures: benchmarks/RESULTS.md, "why PQ stays below 0.6".

Usage::

    python benchmarks/diag_class_learning.py semantic --head class_means --loss ce --schedule onecycle --steps 3000
    python benchmarks/diag_class_learning.py semantic --thing-weight 5 --schedule onecycle
    python benchmarks/diag_class_learning.py hle --steps 2500 --set class_mean_weight=0
    python benchmarks/diag_class_learning.py hle --steps 2500 --schedule onecycle --set semantic_loss=cross_entropy --terms seg=1 ins=1
    python benchmarks/diag_class_learning.py cam --steps 2500 --schedule onecycle
    python benchmarks/diag_class_learning.py means /tmp/hle30/hle
"""
from __future__ import annotations

import argparse
import functools
import time

import numpy as np
import torch
import torch.nn.functional as F

from labkit import methods
from labkit.cli import _overrides
from labkit.data.synthetic.panoptic import FAMILY as PANOPTIC
from labkit.data.synthetic.shapes import FAMILY as SHAPES
from labkit.losses.lovasz import lovasz_softmax
from labkit.models.class_means import ClassMeans
from labkit.models.unet import UNet
from labkit.train import lr_factor


def scenes(family, rng: np.random.Generator, n: int) -> dict[str, torch.Tensor]:
    """``n`` fresh 64 x 64 scenes as a batch (image, instances, semantic, image labels of the thing classes)."""
    drawn = [family.generate(rng, 64, 64, "train") for _ in range(n)]
    semantic = torch.tensor(np.stack([s.semantic for s in drawn]))
    things = torch.tensor(family.things)
    return {
        "image": torch.tensor(np.stack([s.image for s in drawn])),
        "instances": torch.tensor(np.stack([s.instances for s in drawn])),
        "semantic": semantic,
        "labels": (semantic.flatten(1)[:, :, None] == things).any(1).float(),
    }


def semantic_model(head: str, classes: int):
    net = UNet(3, 16, 3)
    if head == "linear":
        readout = torch.nn.Conv2d(16, classes, 1)
        return torch.nn.ModuleList([net, readout]), lambda x: readout(net(x))
    project, means = torch.nn.Conv2d(16, 8, 1), ClassMeans("embedding", classes, 8)
    return torch.nn.ModuleList([net, project, means]), lambda x: means({"embedding": project(net(x))})["semantic"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["semantic", "hle", "cam", "means"])
    parser.add_argument("runs", nargs="*", help="means: hle run folders")
    parser.add_argument("--head", default="linear", choices=["linear", "class_means"])
    parser.add_argument("--loss", default="ce", choices=["ce", "lovasz"])
    parser.add_argument("--schedule", default="cosine", choices=["cosine", "onecycle"])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--thing-weight", type=float, default=1.0, help="semantic, ce: weight of thing pixels")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="hle: method parameters")
    parser.add_argument("--terms", nargs="*", default=[], metavar="TERM=WEIGHT",
                        help="hle: train on these terms of Eq. 16 only, weighted (e.g. seg=1 ins=0.1); default all, 1")
    parser.add_argument("--terms-until", type=int, default=None, metavar="STEP",
                        help="hle: --terms up to this step, the whole loss (Eq. 16) after it")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if args.mode == "means":
        from labkit.train import load_checkpoint

        for run in args.runs:
            _, model, _ = load_checkpoint(run)
            state = model.state_dict()
            means = F.normalize(next(v for k, v in state.items() if k.endswith("means")), dim=1)
            print(run, "class-mean cosines (rows, columns: classes 0..K-1):")
            print((means @ means.T).numpy().round(2))
        return

    family = SHAPES if args.mode == "cam" else PANOPTIC
    classes = len(family.class_names)
    if args.mode == "semantic":
        params, forward = semantic_model(args.head, classes)
        weight = torch.ones(classes)
        weight[list(family.things)] = args.thing_weight
        loss_of = (lambda out, b: F.cross_entropy(out, b["semantic"], weight=weight)) if args.loss == "ce" else (
            lambda out, b: lovasz_softmax(out.softmax(1), b["semantic"]))
    elif args.mode == "hle":
        method = methods.get("hle", **_overrides(args.set))
        params = method.build_model(in_channels=3, num_classes=classes)
        forward = params
        weights = _overrides(args.terms)

        def loss_of(out, b):  # reads `step`, the training loop's below
            terms = method.loss(out, b)
            if weights and (args.terms_until is None or step <= args.terms_until):
                return sum(w * terms[k] for k, w in weights.items())
            return terms["loss"]
    else:
        net, cams = UNet(3, 16, 4), torch.nn.Conv2d(16, len(family.things), 1, bias=False)
        params = torch.nn.ModuleList([net, cams])
        forward = lambda x: cams(net(x)).mean(dim=(2, 3))  # noqa: E731
        loss_of = lambda out, b: F.multilabel_soft_margin_loss(out, b["labels"])  # noqa: E731
    optimizer = torch.optim.Adam(params.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(lr_factor, total=args.steps, schedule=args.schedule))
    rng, test = np.random.default_rng(0), scenes(family, np.random.default_rng(123), 50)
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        params.train()
        batch = scenes(family, rng, 8)
        loss = loss_of(forward(batch["image"]), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % 250 and step != args.steps:
            continue
        params.eval()
        with torch.no_grad():
            out = forward(test["image"])
        if args.mode == "cam":
            prior = test["labels"].mean(0).expand_as(test["labels"])
            print(f"{step} {time.perf_counter() - started:.0f}s test loss "
                  f"{F.multilabel_soft_margin_loss(out, test['labels']):.3f} (label prior "
                  f"{F.binary_cross_entropy(prior, test['labels']):.3f})", flush=True)
            continue
        pred = (out["semantic"] if isinstance(out, dict) else out).argmax(1)
        truth = test["semantic"]
        recall = [float((pred[truth == c] == c).float().mean()) for c in range(1, classes)]
        print(f"{step} {time.perf_counter() - started:.0f}s loss {loss.item():.3f} recall "
              + " ".join(f"{name} {r:.2f}" for name, r in zip(family.class_names[1:], recall)), flush=True)


if __name__ == "__main__":
    main()
