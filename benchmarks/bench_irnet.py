"""IRNet quality on ``synthetic:shapes`` (issue 11): the paper's Tables 1 and 2 in miniature, and stage 4.

1. What ``labkit train --method irnet`` runs (stages 1-3, image-level labels only), on the first
   ``--train-images`` training scenes, into ``OUT/irnet``.
2. Table 1: pseudo-label AP50 on the train split for CAM, CAM + class boundary,
   full IRNet (targets: that order, full IRNet >= 0.5).  Table 2: semantic
   pseudo-label mIoU, CAM vs propagated (target: propagated > CAM).
3. Stage 4: ``discriminative`` trained on IRNet's pseudo-label folder, test AP50
   (target >= 0.5), next to ``discriminative`` trained on the true masks of the
   same scenes (the reference, measured in the same run).  Both train the same
   way (:func:`labkit.train.train`, flips, batches of 8), so the two figures
   differ only by the masks.  ``labkit train --data RUN/pseudo_labels`` trains
   the folder way instead (intensity jitter, 15% held out, ``min_radius``),
   which scored lower on the true masks too (benchmarks/RESULTS.md).

Stage 1 trains its classifier on 2,000 scenes for 10,000 steps of 16 (one-cycle, peak lr 2e-3), as
``irnet``'s defaults do: from scratch, the CAM classifier sits at the label prior for about 4,000 steps,
memorised 1,000 scenes and learnt only objectness from 3,000 in 6,000 steps (benchmarks/RESULTS.md);
about 45 minutes of one CPU thread.  Stage 4's two models train the same number of steps
(``--stage4-epochs`` x ``--stage4-steps``, 60 x 50 of 8): on the pseudo labels the classes are learnt
later than on the true masks, and at 30 epochs they were still being learnt (benchmarks/RESULTS.md).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_irnet.py --out /tmp/bench_irnet

``--stage1-from OLD_OUT/irnet`` reuses an earlier run's CAM network to try stages 2-4 in about 30 minutes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from labkit import methods, workflows
from labkit.data import RandomFlip, SyntheticScenes, load_dataset
from labkit.methods.irnet import pseudo_label_scores
from labkit.train import load_checkpoint, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_irnet"))
    parser.add_argument("--train-images", type=int, default=2000, help="training scenes (all stages)")
    parser.add_argument("--epochs", type=int, default=80, help="stage 1 (CAM network) epochs (10,000 steps)")
    parser.add_argument("--batch-size", type=int, default=None, help="stage 1 batch size (default: irnet's)")
    parser.add_argument("--lr", type=float, default=None, help="stage 1 peak learning rate (default: irnet's)")
    parser.add_argument("--schedule", default=None, help="stage 1 learning-rate schedule (default: irnet's)")
    parser.add_argument("--irn-epochs", type=int, default=None,
                        help="stage 3 (displacement + boundary) epochs (default: irnet's)")
    parser.add_argument("--stage4-epochs", type=int, default=60, help="epochs of both discriminative models")
    parser.add_argument("--stage4-steps", type=int, default=50, help="optimiser steps per stage-4 epoch")
    parser.add_argument("--table-images", type=int, default=60, help="train images scored for Tables 1-2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage1-from", type=Path, default=None, metavar="RUN",
                        help="reuse the CAM network of an earlier run folder (OUT/irnet of a run of this script): "
                             "stage 1 is skipped, stages 2-3 start afresh")
    parser.add_argument("--skip-stage4", action="store_true")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="irnet parameters")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    run = args.out / "irnet"
    # what `labkit train --method irnet` does (workflows.train_run), on the first --train-images scenes
    train_set = SyntheticScenes("shapes", split="train", num_samples=args.train_images, transform=RandomFlip())
    from labkit.cli import _overrides

    stage3 = {} if args.irn_epochs is None else {"irn_epochs": args.irn_epochs}
    method = methods.get("irnet", **{**stage3, **_overrides(args.set)})
    torch.manual_seed(args.seed)
    model = method.build_model(in_channels=3, num_classes=train_set.num_classes)
    kwargs = dict(device="cpu", seed=args.seed, progress=False, data_spec="synthetic:shapes")
    if args.stage1_from is not None:
        reuse_stage1(args.stage1_from, run, method, model)
    else:
        p = method.defaults
        train(method, model, train_set, out_dir=run, epochs=args.epochs, batch_size=args.batch_size or p.batch_size,
              lr=args.lr or p.lr, schedule=args.schedule or p.schedule, **kwargs)
    print(f"irnet stage 1: {time.perf_counter() - started:.0f} s", flush=True)
    method.post_train(model, train_set, out_dir=run, train_kwargs=kwargs)  # stage 3: irnet's irn_batch_size
    print(f"irnet stages 1-3 and pseudo labels: {time.perf_counter() - started:.0f} s", flush=True)
    method, model, _ = load_checkpoint(run)
    train_split = SyntheticScenes("shapes", split="train", num_samples=args.train_images)
    scores = pseudo_label_scores(method, model, train_split, limit=args.table_images, progress=False)
    table1 = {mode: scores[mode]["ap50"] for mode in ("cam", "cam_boundary", "irnet")}
    print(f"Table 1 (pseudo-label AP50, first {scores['n_images']} train images): "
          + ", ".join(f"{k} {v:.3f}" for k, v in table1.items()), flush=True)
    ordered = table1["cam"] < table1["cam_boundary"] < table1["irnet"]
    print(f"  order CAM < CAM+boundary < IRNet: {'yes' if ordered else 'NO'}; "
          f"IRNet >= 0.5: {'yes' if table1['irnet'] >= 0.5 else 'NO'}")
    print(f"Table 2 (semantic mIoU): CAM {scores['miou_cam']:.3f}, propagated {scores['miou_propagated']:.3f} "
          f"({'propagated higher' if scores['miou_propagated'] > scores['miou_cam'] else 'NOT higher'})", flush=True)
    result = {"table1_ap50": table1, "miou_cam": scores["miou_cam"], "miou_propagated": scores["miou_propagated"],
              "table_images": scores["n_images"], "epochs": args.epochs, "irn_epochs": method.defaults.irn_epochs,
              "train_images": args.train_images, "params": _overrides(args.set),
              "stage1_from": None if args.stage1_from is None else str(args.stage1_from)}
    if not args.skip_stage4:
        epochs = args.stage4_epochs
        pseudo = load_dataset(str(run / "pseudo_labels"), transform=RandomFlip())  # as `labkit train --data` reads it
        for name, dataset in (("stage4", pseudo), ("supervised", train_set)):  # the same training, other masks
            disc = methods.get("discriminative")
            torch.manual_seed(args.seed)
            net = disc.build_model(in_channels=3, num_classes=train_set.num_classes)
            train(disc, net, dataset, out_dir=args.out / name, epochs=epochs, batch_size=8, lr=disc.defaults.lr,
                  device="cpu", seed=args.seed, progress=False, steps_per_epoch=args.stage4_steps)
            metrics = workflows.evaluate_run(checkpoint=args.out / name, data="synthetic:shapes:test",
                                             device="cpu", progress=False)
            result[f"{name}_test_ap50"] = float(metrics["ap50"])
            print(f"  {name}: test AP50 {metrics['ap50']:.3f} ({time.perf_counter() - started:.0f} s)", flush=True)
        s4, sup = result["stage4_test_ap50"], result["supervised_test_ap50"]
        print(f"Stage 4 (discriminative, {epochs} epochs) test AP50: on IRNet pseudo labels {s4:.3f} "
              f"({'meets' if s4 >= 0.5 else 'MISSES'} >= 0.5), on true masks {sup:.3f}; ratio {s4 / max(sup, 1e-9):.2f}")
    result["seconds"] = time.perf_counter() - started
    (args.out / "bench_irnet.json").write_text(json.dumps(result, indent=2))
    print(f"total {result['seconds']:.0f} s; wrote {args.out / 'bench_irnet.json'}")


def reuse_stage1(source: Path, run: Path, method: Any, model: torch.nn.Module) -> None:
    """Stage 1 of an earlier run: its CAM network's weights into ``model`` (the displacement and boundary
    network keeps its fresh initialisation), and ``run/model.pt`` as stage 1 would have written it for
    ``method`` and ``model`` (the earlier checkpoint's training record and history, this run's parameters)."""
    from labkit import checkpoint as ckpt

    record = ckpt.read_checkpoint(Path(source) / ckpt.CHECKPOINT_NAME)
    state = model.state_dict()
    cam = {k: v for k, v in record["model"]["state"].items() if k.startswith(("own_backbones.cam.", "heads.cam."))}
    if not cam or any(k not in state or state[k].shape != v.shape for k, v in cam.items()):
        raise SystemExit(f"{source} holds no CAM network of this shape")
    model.load_state_dict(state | cam)
    for key in ("format", "version"):
        record.pop(key, None)
    record["method"] = {"key": method.key, "params": dataclasses.asdict(method.defaults)}
    record["model"] = {"config": model.config, "state": model.state_dict()}
    run.mkdir(parents=True, exist_ok=True)
    ckpt.save_checkpoint(run / ckpt.CHECKPOINT_NAME, record)


if __name__ == "__main__":
    main()
