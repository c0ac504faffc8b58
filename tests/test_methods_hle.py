"""The ``hle`` method: model with persistent class means, loss wiring, panoptic decoding, checkpoints, CLI."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from labkit import methods
from labkit.errors import LabkitError
from labkit.methods.hle import panoptic_decode, smooth_seed_map


class PanopticToy(torch.utils.data.Dataset):
    """16x16 scenes: one or two squares (thing class 1) on two stuff halves (classes 2, 3)."""

    class_names = ["background", "square", "left", "right"]
    num_classes = 4
    things = [1]
    stuff = [2, 3]
    in_channels = 3

    def __init__(self, n: int = 4) -> None:
        self.samples = []
        for i in range(n):
            g = torch.Generator().manual_seed(i)
            sem = torch.full((16, 16), 2, dtype=torch.int64)
            sem[:, 8:] = 3
            inst = torch.zeros(16, 16, dtype=torch.int64)
            for k in range(1 + i % 2):
                y, x = torch.randint(0, 12, (2,), generator=g).tolist()
                inst[y:y + 4, x:x + 4] = k + 5
            sem[inst > 0] = 1
            image = torch.stack([(sem == 1).float(), (sem == 2).float(), (sem == 3).float()])
            image = image + 0.1 * torch.rand(3, 16, 16, generator=g)
            self.samples.append({"image": image, "instances": inst, "semantic": sem})

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        return self.samples[index]


def test_heads_outputs_and_class_means_in_the_model_state() -> None:
    method = methods.get("hle", embedding_dim=3, width=4, depth=1)
    assert method.heads(4) == {"embedding": 3, "sigma": 2, "seed": 1}
    model = method.build_model(in_channels=3, num_classes=4)
    out = model(torch.zeros(2, 3, 8, 10))
    assert out["embedding"].shape == (2, 3, 8, 10) and out["semantic"].shape == (2, 4, 8, 10)
    assert torch.allclose(out["embedding"].norm(dim=1), torch.ones(2, 8, 10), atol=1e-5)
    state = model.state_dict()
    assert state["readout.means"].shape == (4, 3) and state["readout.log_sigma"].shape == (4,)
    # Thomson initialisation: 4 means in 3-D form a regular tetrahedron
    mu = F.normalize(state["readout.means"], dim=1)
    off = ~torch.eye(4, dtype=torch.bool)
    assert torch.allclose((mu @ mu.t())[off], torch.full((12,), -1 / 3), atol=1e-3)
    # Eq. 9: softmax of the logits is p_k / sum_c p_c with p_k = exp(-(1 - e.mu_k) / (2 sigma_k^2))
    e = out["embedding"][0, :, 0, 0]
    sigma = state["readout.log_sigma"].exp()
    p = torch.exp(-(1 - mu @ e) / (2 * sigma**2))
    assert torch.allclose(out["semantic"][0, :, 0, 0].softmax(0), p / p.sum(), atol=1e-5)
    random = methods.get("hle", embedding_dim=3, width=4, depth=1, init="random").build_model(3, 4)
    assert not torch.allclose(random.state_dict()["readout.means"], state["readout.means"])
    split = methods.get("hle", embedding_dim=3, width=4, depth=1, space="split")
    assert "semantic_embedding" in split.heads(4)
    assert split.build_model(3, 4)(torch.zeros(1, 3, 8, 8))["semantic"].shape == (1, 4, 8, 8)


def test_bad_method_parameters_raise() -> None:
    for bad in (dict(space="flat"), dict(init="zeros"), dict(instance_loss="dice"), dict(embedding_dim=1),
                dict(sigma_init=0.0), dict(semantic_warmup=1.0), dict(semantic_warmup=-0.1), dict(seed_weight=-1.0)):
        with pytest.raises(LabkitError):
            methods.get("hle", **bad)


def test_loss_terms_learn_things_and_ignore_id_permutations() -> None:
    data = PanopticToy(2)
    method = methods.get("hle", embedding_dim=3, width=4, depth=1)
    torch.manual_seed(0)
    model = method.build_model(3, 4)
    batch = {k: torch.stack([data[i][k] for i in range(2)]) for k in ("image", "instances", "semantic")}
    terms = method.loss(model(batch["image"]), batch)
    assert set(terms) == {"seg", "seg_mean", "ins", "ins_var", "seed", "loss"}
    counts = model.readout.pixel_counts
    assert counts[1, 0] == counts[1, 1] == int((batch["semantic"] == 1).sum()) and counts[2, 1] == 0
    model.eval()
    assert model(batch["image"])["thing_classes"][0, :, 0, 0].tolist() == [0, 1, 0, 0]
    assert "class_pixel_counts" not in model(batch["image"])
    model.train()
    terms["loss"].backward()
    assert model.readout.means.grad is not None and model.readout.log_sigma.grad is not None
    permuted = dict(batch, instances=torch.where(batch["instances"] == 5, 99, batch["instances"]))
    again = method.loss(model(batch["image"]), permuted)
    assert again["loss"].item() == pytest.approx(terms["loss"].item(), rel=1e-5)


def test_semantic_warmup_trains_the_semantic_terms_alone_then_all(tmp_path) -> None:
    from labkit.train import train

    data = PanopticToy(2)
    batch = {k: torch.stack([data[i][k] for i in range(2)]) for k in ("image", "instances", "semantic")}
    method = methods.get("hle", embedding_dim=3, width=4, depth=1, semantic_warmup=0.5)
    torch.manual_seed(0)
    model = method.build_model(3, 4)
    full = method.loss(model(batch["image"]), batch)  # no epoch begun: everything trains
    method.begin_epoch(2, 4)  # round(0.5 * 4) = 2 warm-up epochs
    warm = method.loss(model(batch["image"]), batch)
    assert warm["ins"].item() == warm["ins_var"].item() == warm["seed"].item() == 0.0 < full["ins"].item()
    assert warm["seg"].item() == pytest.approx(full["seg"].item())
    assert warm["loss"].item() == pytest.approx((warm["seg"] + warm["seg_mean"]).item())
    model.eval()  # validation always reports the whole loss
    assert method.loss(model(batch["image"]), batch)["ins"].item() > 0
    method.begin_epoch(3, 4)
    model.train()
    assert method.loss(model(batch["image"]), batch)["ins"].item() > 0
    # through the training loop: 2 epochs, both warm-up (round(0.75 * 2)); resumed as a 4-epoch run, epoch 3 too
    method = methods.get("hle", embedding_dim=3, width=4, depth=1, semantic_warmup=0.75)
    train(method, method.build_model(3, 4), data, out_dir=tmp_path, epochs=2, batch_size=2, progress=False,
          device="cpu")
    again = methods.get("hle", embedding_dim=3, width=4, depth=1, semantic_warmup=0.75)
    history = train(again, again.build_model(3, 4), data, out_dir=tmp_path, epochs=4, batch_size=2,
                    progress=False, device="cpu")
    assert [e["ins"] == 0.0 for e in history["epochs"]] == [True, True, True, False]


def hand_built(spatial_sigma: float = 3.0, double_seed: bool = False):
    """16x16: squares A, B (class 1, same embedding, far apart) and C (class 2) on stuff (class 3)."""
    sem = torch.full((16, 16), 3, dtype=torch.int64)
    inst = torch.zeros(16, 16, dtype=torch.int64)
    inst[1:5, 1:5], inst[1:5, 10:14], inst[10:15, 5:10] = 1, 2, 3
    sem[inst == 1], sem[inst == 2], sem[inst == 3] = 1, 1, 2
    basis = torch.eye(3)
    emb = torch.zeros(3, 16, 16)
    emb[:, (inst == 1) | (inst == 2)] = basis[0][:, None]
    emb[:, inst == 3] = basis[1][:, None]
    emb[:, inst == 0] = basis[2][:, None]
    spreads = torch.stack([torch.full((16, 16), 0.3), torch.full((16, 16), spatial_sigma)])
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    seed = torch.zeros(16, 16)
    centres = [(1, 1), (4, 4)] if double_seed else [(2, 2)]
    for (cy, cx), peak in zip(centres, (0.9, 0.85)):
        bump = peak * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2)
        seed = torch.maximum(seed, torch.where(inst == 1, bump, 0.0))
    for i, (cy, cx) in ((2, (2, 11)), (3, (12, 7))):
        seed = torch.maximum(seed, torch.where(inst == i, 0.9 * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8), 0.0))
    probs = torch.full((4, 16, 16), 0.1 / 3)
    probs.scatter_(0, sem[None], 0.9)
    return emb, spreads, seed, probs, inst, sem


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    pairs = {(int(x), int(y)) for x, y in zip(a.reshape(-1), b.reshape(-1))}
    return len(pairs) == len({x for x, _ in pairs}) == len({y for _, y in pairs})


def test_decode_hand_built_map_two_classes_three_instances() -> None:
    emb, spreads, seed, probs, inst, sem = hand_built()
    pred = panoptic_decode(emb, spreads, seed, probs, things=(1, 2))
    assert len(pred["ids"]) == 3 and same_partition(pred["instances"], inst)
    assert sorted(pred["classes"].tolist()) == [1, 1, 2]
    assert torch.equal(pred["semantic"], sem)
    assert bool((pred["scores"] > 0).all()) and bool((pred["scores"] <= 1).all())
    # A and B share an embedding: only the spatial kernel (Eq. 8) keeps them apart
    assert pred["instances"][2, 2] != pred["instances"][2, 11]


def test_decode_merges_two_seeds_of_one_instance_and_thresholds() -> None:
    emb, spreads, seed, probs, inst, sem = hand_built(spatial_sigma=5.0, double_seed=True)
    pred = panoptic_decode(emb, spreads, seed, probs, things=(1, 2))
    assert len(pred["ids"]) == 3 and same_partition(pred["instances"], inst)
    # a seed threshold above every seed: no instance, the semantic map stays
    none = panoptic_decode(emb, spreads, seed, probs, things=(1, 2), seed_threshold=0.95)
    assert len(none["ids"]) == 0 and int(none["instances"].max()) == 0 and torch.equal(none["semantic"], sem)
    # stuff pixels less sure than stuff_threshold become unlabelled
    unsure = panoptic_decode(emb, spreads, seed, probs, things=(1, 2), stuff_threshold=0.95)
    assert int((unsure["semantic"] == 0).sum()) == int((sem == 3).sum())
    # min_area drops the instances smaller than it (A and B have 16 pixels, C 25)
    big = panoptic_decode(emb, spreads, seed, probs, things=(1, 2), min_area=20)
    assert big["classes"].tolist() == [2]


def test_seed_sigma_finds_the_centre_of_a_seed_plateau() -> None:
    """A plateau seed map with a bump near each end of one object: the paper's decoding cuts it in two,
    the blurred map has one maximum, at the centre, whose kernel covers the whole object."""
    h, w = 15, 24
    emb = torch.zeros(3, h, w)
    emb[0] = 1.0
    spreads = torch.stack([torch.full((h, w), 0.5), torch.full((h, w), 10.0)])  # spatial spread 10 px
    obj = torch.zeros(h, w, dtype=torch.bool)
    obj[2:13, 2:22] = True  # 11 x 20 pixels
    seed = torch.where(obj, 0.8, 0.0)
    seed[7, 3] = seed[7, 20] = 0.85  # 17 px apart: kernel exp(-17^2 / (2 * 10^2)) = 0.24 between them
    probs = torch.stack([(~obj).float(), obj.float()])
    paper = panoptic_decode(emb, spreads, seed, probs, things=(1,))
    assert len(paper["ids"]) == 2
    blurred = panoptic_decode(emb, spreads, seed, probs, things=(1,), seed_sigma=3.0)
    assert blurred["ids"].tolist() == [1] and bool((blurred["instances"][obj] == 1).all())
    assert torch.equal(panoptic_decode(emb, spreads, seed, probs, things=(1,), seed_sigma=0.0)["instances"],
                       paper["instances"])
    with pytest.raises(LabkitError, match="seed_sigma"):
        panoptic_decode(emb, spreads, seed, probs, things=(1,), seed_sigma=-1.0)


def test_smooth_seed_map_is_a_normalised_gaussian() -> None:
    flat = torch.full((7, 9), 0.6)
    assert torch.allclose(smooth_seed_map(flat, 2.0), flat)  # weights sum to 1, borders repeated
    impulse = torch.zeros(21, 21)
    impulse[10, 10] = 1.0
    out = smooth_seed_map(impulse, 2.0)
    d = torch.arange(21.0) - 10
    expected = torch.exp(-(d[:, None] ** 2 + d[None] ** 2) / 8) * (d.abs() <= 6)[:, None] * (d.abs() <= 6)[None]  # 3 sigma
    assert torch.allclose(out, expected / expected.sum(), atol=1e-6)


def test_decode_images_with_only_stuff_or_only_things() -> None:
    emb, spreads, seed, probs, inst, sem = hand_built()
    stuff_only = torch.zeros_like(probs)
    stuff_only[3] = 1
    pred = panoptic_decode(emb, spreads, seed, stuff_only, things=(1, 2))
    assert len(pred["ids"]) == 0 and bool((pred["semantic"] == 3).all())
    things_only = torch.zeros_like(probs)
    things_only[1] = 1
    one = torch.zeros_like(seed)
    one[8, 8] = 0.9
    pred = panoptic_decode(torch.zeros_like(emb).index_fill_(0, torch.tensor([0]), 1.0),
                           torch.stack([spreads[0], torch.full_like(seed, 100.0)]), one, things_only, things=(1,))
    assert pred["ids"].tolist() == [1] and bool((pred["instances"] == 1).all())


def test_method_decode_parameters_and_grid() -> None:
    method = methods.get("hle", embedding_dim=3, width=4, depth=1)
    model = method.build_model(3, 4)
    outputs = model(torch.rand(2, 3, 12, 12))
    grid = method.decode_grid()
    assert set(grid) == {"seed_threshold", "kernel_threshold", "seed_sigma"}
    preds = method.decode(outputs, **{k: v[0] for k, v in grid.items()})
    assert len(preds) == 2 and all(p["semantic"].shape == (12, 12) for p in preds)
    with pytest.raises(LabkitError, match="unknown decoding"):
        method.decode(outputs, bandwidth=0.5)
    with pytest.raises(LabkitError, match="seed_threshold"):
        method.decode(outputs, seed_threshold=2.0)


def test_checkpoint_keeps_class_means_and_things(tmp_path) -> None:
    from labkit.train import load_checkpoint, train

    method = methods.get("hle", embedding_dim=3, width=4, depth=1)
    torch.manual_seed(0)
    model = method.build_model(3, 4)
    train(method, model, PanopticToy(4), out_dir=tmp_path, epochs=1, batch_size=2, lr=1e-2, progress=False,
          device="cpu")
    loaded, again, checkpoint = load_checkpoint(tmp_path)
    assert loaded.defaults.things is None  # the method parameters are not changed by training
    assert torch.equal(again.readout.means, model.readout.means)
    assert torch.equal(again.readout.pixel_counts, model.readout.pixel_counts)
    assert again.readout.pixel_counts[1].tolist()[0] > 0
    image = torch.rand(1, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        a, b = model(image), again(image)
    assert torch.allclose(a["semantic"], b["semantic"]) and torch.allclose(a["embedding"], b["embedding"])


def test_interrupted_training_resumes(tmp_path) -> None:
    from labkit.train import train

    method = methods.get("hle", embedding_dim=3, width=4, depth=1)
    torch.manual_seed(0)
    train(method, method.build_model(3, 4), PanopticToy(2), out_dir=tmp_path, epochs=1, batch_size=2,
          progress=False, device="cpu")
    again = methods.get("hle", embedding_dim=3, width=4, depth=1)
    history = train(again, again.build_model(3, 4), PanopticToy(2), out_dir=tmp_path, epochs=2, batch_size=2,
                    progress=False, device="cpu")
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]


@pytest.mark.slow
def test_short_training_beats_the_untrained_model_in_pq(tmp_path) -> None:
    from labkit.evaluation import evaluate
    from labkit.train import train

    method = methods.get("hle", embedding_dim=3, width=8, depth=2)
    torch.manual_seed(0)
    model = method.build_model(3, 4)
    data = PanopticToy(8)
    before = evaluate(method, model, data, progress=False)
    train(method, model, data, out_dir=tmp_path, epochs=30, batch_size=4, lr=1e-2, progress=False, device="cpu")
    after = evaluate(method, model, data, progress=False)
    assert after["pq"] > before["pq"] + 0.2
    assert after["pq_stuff"] > 0.5


def panoptic_folder(root):
    """An instance folder with semantic maps and stuff classes (classes.json), from :class:`PanopticToy`."""
    import numpy as np
    from PIL import Image

    for sub in ("images", "masks", "semantic"):
        (root / sub).mkdir(parents=True)
    for i, sample in enumerate(PanopticToy(4)):
        rgb = (sample["image"].clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
        Image.fromarray(rgb).save(root / "images" / f"scene{i}.png")
        Image.fromarray(sample["instances"].numpy().astype(np.uint16)).save(root / "masks" / f"scene{i}.png")
        Image.fromarray(sample["semantic"].numpy().astype(np.uint8)).save(root / "semantic" / f"scene{i}.png")
    (root / "classes.json").write_text(json.dumps({"classes": PanopticToy.class_names, "stuff": [2, 3]}))
    return root


@pytest.mark.slow
def test_cli_train_evaluate_predict_panoptic(tmp_path, capsys) -> None:
    import numpy as np
    from PIL import Image

    from labkit.cli import main

    folder = panoptic_folder(tmp_path / "scenes")
    run = tmp_path / "run"
    assert main(["train", "--method", "hle", "--data", str(folder), "--out", str(run), "--epochs", "2",
                 "--crop", "16", "--batch-size", "2", "--device", "cpu",
                 "--set", "width=4", "depth=1", "embedding_dim=3"]) == 0
    assert main(["evaluate", "--checkpoint", str(run / "model.pt"), "--data", str(folder),
                 "--json", str(tmp_path / "eval.json"), "--set", "seed_threshold=0.3"]) == 0
    results = json.loads((tmp_path / "eval.json").read_text())
    assert results["method"] == "hle"
    for key in ("pq", "pq_things", "pq_stuff", "ap50"):
        assert 0.0 <= results[key] <= 1.0
    assert main(["predict", "--checkpoint", str(run / "model.pt"), "--input", str(folder),
                 "--out", str(tmp_path / "pred")]) == 0
    semantic = np.asarray(Image.open(tmp_path / "pred" / "scene0.semantic.png"))
    assert semantic.shape == (16, 16) and set(np.unique(semantic).tolist()) <= {0, 1, 2, 3}
    index = json.loads((tmp_path / "pred" / "predictions.json").read_text())["images"]
    assert index["scene0"]["semantic"] == "scene0.semantic.png"
    capsys.readouterr()
