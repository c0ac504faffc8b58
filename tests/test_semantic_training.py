"""A short CPU training run of the ``semantic`` method learns an easy task."""
import torch

from labkit import methods
from labkit.train import load_checkpoint, train


def bright_squares(n=8, size=16):
    """Noisy images of one bright square on a dark background; semantic = square."""
    samples = []
    for i in range(n):
        g = torch.Generator().manual_seed(i)
        instances = torch.zeros(size, size, dtype=torch.int64)
        y, x = torch.randint(0, size - 6, (2,), generator=g).tolist()
        instances[y:y + 6, x:x + 6] = 1
        image = instances.float()[None] + 0.2 * torch.rand(1, size, size, generator=g)
        samples.append({"image": image, "instances": instances, "semantic": instances.clone()})
    return samples


def pixel_accuracy(method, model, samples):
    with torch.no_grad():
        predictions = method.decode(model(torch.stack([s["image"] for s in samples])))
    return torch.stack([(p["semantic"] == s["semantic"]).float().mean() for p, s in zip(predictions, samples)]).mean()


def test_training_lowers_the_loss_and_decodes_the_squares(tmp_path):
    data = bright_squares()
    method = methods.get("semantic")
    torch.manual_seed(0)
    model = method.build_model(in_channels=1, num_classes=2, width=4, depth=2)
    history = train(method, model, data, out_dir=tmp_path, epochs=8, batch_size=4, lr=1e-2, progress=False)
    losses = [record["loss"] for record in history["epochs"]]
    assert losses[-1] < 0.6 * losses[0]
    _, loaded, _ = load_checkpoint(tmp_path)
    assert pixel_accuracy(method, loaded, data) > 0.9
