"""The ``labkit`` command: train, tune, evaluate, predict, and run the notebooks.

User errors (:class:`labkit.errors.LabkitError`) print one line, ``labkit: error: …``,
and exit with status 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from labkit.errors import LabkitError

log = logging.getLogger("labkit")


def _parse_value(text: str) -> Any:
    """``--set`` values: int, float, bool, None, a comma-separated tuple of those, or the string itself."""
    if "," in text:
        return tuple(_parse_value(part.strip()) for part in text.split(",") if part.strip())
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _overrides(pairs: Sequence[str]) -> dict[str, Any]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise LabkitError(f"--set expects KEY=VALUE, got {pair!r}")
        result[key] = _parse_value(value)
    return result


def _margin(text: str) -> float | str:
    """``--margin``: ``se`` or a number >= 0 (:func:`labkit.tuning.check_margin`)."""
    from labkit.tuning import check_margin

    try:
        return check_margin(text if text == "se" else _parse_value(text))
    except LabkitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_model_source(p: argparse.ArgumentParser) -> None:
    """--checkpoint or --method, plus --device and decoding --set (evaluate and predict)."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="RUN_DIR/model.pt")
    src.add_argument("--method", help="a method that needs no training (watershed, components)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="decoding parameters (over RUN_DIR/decode.json)")
    p.add_argument("--tile", type=int, default=None,
                   help="sliding-window tile size (default: the run's training crop for folders; 0 = whole images)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labkit", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a method on a dataset")
    p.add_argument("--method", required=True, help="method key (see `labkit methods`)")
    p.add_argument("--data", required=True, help="instance folder DIR or synthetic:NAME[:SPLIT]")
    p.add_argument("--out", required=True, type=Path, help="run folder (model.pt, history.json)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: the method's)")
    p.add_argument("--batch-size", type=int, default=None, help="images per step (default: the method's, else 8)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the method's)")
    p.add_argument("--schedule", default=None, choices=["cosine", "onecycle", "poly", "constant"],
                   help="learning-rate schedule (default: the method's, else cosine; onecycle: warm up over the "
                        "first 30%% of the steps, then cosine)")
    p.add_argument("--samples", type=int, default=None,
                   help="scenes in a synthetic training set (default: the family's, 400 for training)")
    p.add_argument("--crop", type=int, default=128, help="training crop size for image folders")
    p.add_argument("--backbone", default="unet", help="unet | resnet50 | resnet101")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-resume", action="store_true", help="start afresh even if RUN_DIR has a checkpoint")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="method hyperparameters")
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="optimiser steps per epoch, whatever the number of images (default: 20 for a folder, "
                        "50 for synthetic data; 0 = one pass over the data)")
    p.add_argument("--augment", default="auto", choices=["auto", "microscopy", "photo", "none"],
                   help="augmentation of image folders (auto: microscopy for 1 channel, photo for 3)")
    p.add_argument("--val", default=None,
                   help="validation data (default: DIR/val or ../val, else images held out of DIR)")

    p = sub.add_parser("tune", help="sweep a trained method's decode parameters on validation images -> decode.json")
    p.add_argument("--checkpoint", required=True, type=Path, help="RUN_DIR/model.pt (or best.pt)")
    p.add_argument("--data", required=True, help="instance folder DIR or synthetic:NAME[:SPLIT] (default split: val)")
    p.add_argument("--metric", default="auto", choices=["auto", "matching_accuracy", "ap50", "ap", "pq"],
                   help="auto: PQ for a panoptic method (hle) on data with stuff classes, else matching accuracy at "
                        "IoU 0.5 for one object class, AP50 for several")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="decoding parameters held fixed")
    p.add_argument("--tile", type=int, default=None,
                   help="sliding-window tile size (default: the run's training crop for folders; 0 = whole images)")
    p.add_argument("--margin", type=_margin, default="se",
                   help="keep the decoding in use unless the best setting beats it by more than this; se: one "
                        "standard error of its score on the validation objects (default), 0: take the best")

    p = sub.add_parser("evaluate", help="evaluate a checkpoint (or an untrained baseline) on a dataset")
    _add_model_source(p)
    p.add_argument("--data", required=True, help="instance folder DIR or synthetic:NAME[:SPLIT] (default split: test)")
    p.add_argument("--json", type=Path, default=None, help="write the metrics here")

    p = sub.add_parser("predict", help="write instance masks for a folder of images")
    _add_model_source(p)
    p.add_argument("--input", required=True, help="a folder of images (or DIR/images), or synthetic:NAME[:SPLIT]")
    p.add_argument("--out", required=True, type=Path, help="folder for NAME.png masks + predictions.json")

    p = sub.add_parser("compare", help="evaluate runs side by side -> compare.json + report.html")
    p.add_argument("runs", nargs="+", help="run folders (or model.pt files) and training-free method keys")
    p.add_argument("--data", required=True, help="instance folder DIR or synthetic:NAME[:SPLIT] (default split: test)")
    p.add_argument("--out", required=True, type=Path, help="folder for compare.json and report.html")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--grid", type=int, default=4, help="images in the report's prediction grid")
    p.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images")

    sub.add_parser("methods", help="list the available method keys")

    p = sub.add_parser("notebooks", help="run the lab's notebooks headless")
    nb_sub = p.add_subparsers(dest="notebooks_command", required=True)
    q = nb_sub.add_parser("run", help="execute every notebook in order")
    q.add_argument("--profile", default="fast", choices=["fast", "full"])
    q.add_argument("--out", type=Path, default=Path("runs/latest"))
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--notebooks", type=Path, default=None, help="folder of notebooks (default: the lab's)")
    q.add_argument("--no-html", action="store_true")
    return parser


def cmd_train(args: argparse.Namespace) -> None:
    from labkit import workflows

    history = workflows.train_run(
        method=args.method, data=args.data, out=args.out, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, schedule=args.schedule, crop=args.crop, backbone=args.backbone,
        device=args.device, seed=args.seed, resume=not args.no_resume,
        method_params=_overrides(args.set),
        steps_per_epoch="auto" if args.steps_per_epoch is None else (args.steps_per_epoch or None),
        augment=args.augment, val_data=args.val, samples=args.samples,
    )
    last = history["epochs"][-1] if history.get("epochs") else {}
    print(f"trained {args.method} -> {args.out / 'model.pt'}  (last epoch: {last})")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from labkit import workflows
    from labkit.evaluation import format_table

    results = workflows.evaluate_run(
        checkpoint=args.checkpoint, method=args.method, data=args.data,
        json_path=args.json, device=args.device, decode_params=_overrides(args.set), tile=args.tile,
    )
    print(format_table(results))
    if args.json:
        print(f"wrote {args.json}")


def cmd_predict(args: argparse.Namespace) -> None:
    from labkit import workflows

    written = workflows.predict_run(
        checkpoint=args.checkpoint, method=args.method, source=args.input, out=args.out,
        device=args.device, decode_params=_overrides(args.set), tile=args.tile,
    )
    print(f"wrote {written} mask(s) and predictions.json to {args.out}")


def cmd_tune(args: argparse.Namespace) -> None:
    from labkit import workflows
    from labkit.tuning import format_curve

    result = workflows.tune_run(
        checkpoint=args.checkpoint, data=args.data, metric=args.metric, device=args.device,
        decode_params=_overrides(args.set), tile=args.tile, margin=args.margin,
    )
    best = next(r for r in result["curve"] if r["params"] == result["best"] and r["score"] == result["best_score"])
    print(format_curve(result["curve"], result["metric"], best))
    print(f"\n{result['metric']} on {result['n_images']} validation image(s), {result['n_objects']} objects: "
          f"{result['default_score']:.3f} before, {result['best_score']:.3f} at best with {result['best']}")
    if result["kept"]:
        print(f"kept the decoding in use {result['chosen']}: the best setting gains "
              f"{result['best_score'] - result['default_score']:.3f}, not more than the margin {result['margin']:.3f}")
    print(f"wrote {result['decode_json']} (evaluate and predict use it; --set still wins)")


def cmd_compare(args: argparse.Namespace) -> None:
    from labkit.compare import compare, format_rows

    result = compare(args.runs, args.data, out=args.out, device=args.device, grid_images=args.grid,
                     max_images=args.max_images)
    print(format_rows(result["rows"]))
    print(f"wrote {args.out / 'compare.json'} and {args.out / 'report.html'}")


def cmd_methods(args: argparse.Namespace) -> None:
    from labkit import methods

    for key in methods.available():
        print(key)


def cmd_notebooks(args: argparse.Namespace) -> None:
    from labkit.notebook_runner import run_notebooks

    summary = run_notebooks(
        out=args.out, profile=args.profile, seed=args.seed,
        notebook_dir=args.notebooks, html=not args.no_html,
    )
    for name, entry in summary["notebooks"].items():
        print(f"{name:32s} {entry['status']:6s} {entry['seconds']:7.1f}s")
    print(f"wrote {args.out / 'summary.json'}")


COMMANDS = {
    "train": cmd_train, "tune": cmd_tune, "evaluate": cmd_evaluate, "predict": cmd_predict,
    "methods": cmd_methods, "notebooks": cmd_notebooks, "compare": cmd_compare,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        COMMANDS[args.command](args)
    except LabkitError as exc:
        print(f"labkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("labkit: interrupted (the last checkpoint is kept)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
