"""`convemerge cnfa` and the run-level library under it (convemerge.experiments.cnfa.run) on tiny trained runs:
the initialisation rebuilt bit for bit, images drawn from the run's train / validation split only, the JSON and
pictures written, the ImageNet path on a random ResNet18, and the one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from convemerge.cli import main
from convemerge.errors import ConfigError
from convemerge.experiments.cnfa.run import load_init_model, run_images, run_state, top_outputs
from convemerge.train import TrainConfig, load_run_model, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train(out: Path, *, lr: float, seed: int = 0, epochs: int = 1) -> Path:
    cfg = TrainConfig(model="vanilla-cnn", model_options={"depth": 2, "width": 16}, dataset="mnist-5k", n_train=200,
                      val_fraction=0.05, optimizer="adam", lr=lr, schedule="constant", epochs=epochs, batch_size=50,
                      seed=seed, device="cpu", num_threads=1, out=str(out))
    train(cfg, progress=False, verbose=False)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("cnfa-run") / "run", lr=3e-3, seed=1, epochs=2)


def _raw(x: torch.Tensor) -> set[bytes]:
    """Standardised MNIST images back to their uint8 bytes (one entry per image)."""
    from convemerge.data import load_dataset

    ref = load_dataset("mnist-5k", "train")
    raw = (x * ref.std[0] + ref.mean[0]) * 255.0
    assert torch.allclose(raw, raw.round(), atol=2e-3)  # standardised uint8 pixels, nothing else
    return {bytes(r) for r in raw.round().clamp(0, 255).to(torch.uint8).reshape(len(x), -1).numpy()}


def test_init_model_is_the_engines_initialisation(tmp_path):
    # lr 1e-30: Adam's steps are far below float32 resolution, so the saved weights ARE the initial weights
    run = _train(tmp_path / "frozen", lr=1e-30, seed=3)
    init, saved = load_init_model(run), load_run_model(run)
    assert all(torch.equal(a, b) for a, b in zip(init.state_dict().values(), saved.state_dict().values()))
    other = _train(tmp_path / "other", lr=1e-30, seed=4)
    assert not torch.equal(load_init_model(other).layer1.weight, init.layer1.weight)
    before = torch.random.get_rng_state()
    load_init_model(run)
    assert torch.equal(before, torch.random.get_rng_state())  # the caller's RNG is untouched


def test_images_come_from_the_runs_train_or_val_split_only(trained):
    from convemerge.data import load_dataset

    x_train = run_images(trained, 10_000)  # more than there are: all 200 training images
    x_val = run_images(trained, 10_000, split="val")
    assert x_train.shape == (200, 1, 28, 28) and 0 < len(x_val) < 400
    train_set, val_set = _raw(x_train), _raw(x_val)
    assert not train_set & val_set
    full = load_dataset("mnist-5k", "train")
    everything = {bytes(r) for r in full.images.reshape(len(full), -1).numpy()}
    assert train_set <= everything and val_set <= everything
    # a seeded sample: same seed, same images; another seed, another sample
    assert torch.equal(run_images(trained, 20, seed=5), run_images(trained, 20, seed=5))
    assert not torch.equal(run_images(trained, 20, seed=5), run_images(trained, 20, seed=6))
    with pytest.raises(ConfigError, match="never used"):
        run_images(trained, 10, split="test")


def test_cli_writes_table_json_and_pictures(trained, tmp_path, capsys):
    out = tmp_path / "cnfa"
    rc = main(["cnfa", str(trained), "--images", "40", "--out", str(out), "--threads", "1", "--power", "0.5"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "layer1" in text and "Pearson" in text and "skipped" in text  # the readout (d = 12544) is skipped
    rec = json.loads((out / "cnfa.json").read_text())
    assert rec["source"]["run"] == "run" and rec["source"]["split"] == "train" and rec["source"]["images"] == 40
    assert rec["settings"]["power"] == 0.5 and rec["settings"]["n_images"] == 40
    rows = {r["layer"]: r for r in rec["table"]}
    assert set(rows) == {"layer1", "layer2", "layer3"} and rows["layer3"]["skipped"]
    for name in ("layer1", "layer2"):
        r = rows[name]
        assert -1 <= r["pearson"] <= 1 and -1 <= r["init_pearson"] <= 1
        assert r["w0_pearson"] < 1 - 1e-6  # trained weights moved away from the rebuilt initialisation
    assert sorted({c["n"] for c in rec["convergence"]}) == [10, 20, 40]
    for rel in rec["figures"]:
        assert (out / rel).stat().st_size > 1000
    assert "filters/layer1.png" in rec["figures"] and "agop_vs_wtw/layer2.png" in rec["figures"]


def test_cli_errors_are_one_line(trained, tmp_path, capsys):
    assert main(["cnfa", str(trained), "--split", "test"]) == 2
    assert main(["cnfa", str(tmp_path / "nowhere")]) == 2
    assert main(["cnfa"]) == 2
    assert main(["cnfa", str(trained), "--outputs", "3"]) == 2
    assert main(["cnfa", "--imagenet", "resnet18"]) == 2
    assert main(["cnfa", str(trained), "--dataset", "digits"]) == 2  # 8×8 images for a 28×28 network
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 6 and all(line.startswith("error: ") for line in err)
    with pytest.raises(ConfigError):
        run_state(tmp_path)  # a folder without checkpoints


def test_cli_imagenet_random_resnet18(tmp_path, capsys):
    from PIL import Image
    from safetensors.torch import save_file

    from convemerge.models.imagenet import build_imagenet_model

    torch.manual_seed(0)
    net = build_imagenet_model("resnet18", num_classes=7)
    weights = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    folder = tmp_path / "imgs"
    folder.mkdir()
    gen = torch.Generator().manual_seed(0)
    for i in range(3):
        pixels = torch.randint(0, 256, (40, 48, 3), generator=gen, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.png")
    out = tmp_path / "inet"
    rc = main(["cnfa", "--imagenet", "resnet18", "--weights", str(weights), "--images-dir", str(folder),
               "--images", "2", "--outputs", "2", "--layer", "conv1", "--out", str(out), "--threads", "1"])
    assert rc == 0, capsys.readouterr().err
    rec = json.loads((out / "cnfa.json").read_text())
    assert rec["source"]["kind"] == "imagenet" and rec["source"]["images"] == 2
    assert len(rec["source"]["outputs"]) == 2 and "random" in rec["source"]["init"]
    (row,) = rec["table"]
    assert row["layer"] == "conv1" and row["in_dim"] == 3 * 7 * 7 and row["init_pearson"] is not None
    # the stand-in "pretrained" net here is the seed-0 random net itself: ΔW = 0, so the centred column is empty
    assert row["moved"] == 0.0 and row["delta_pearson"] is None and "0.5" in rec["tables_by_power"]
    # by default the AGOP sums over every output, as the authors' scripts do
    from convemerge.analysis.agop import layer_agop
    from convemerge.experiments.cnfa.run import cnfa_for_imagenet
    from convemerge.models.imagenet import load_image_folder

    rec = cnfa_for_imagenet("resnet18", weights, folder, tmp_path / "all", images=2, layers=["conv1"], sizes=(),
                            plot_layers=[])
    assert rec["source"]["outputs"] is None
    x = load_image_folder(folder, limit=2)
    g = layer_agop(net.eval(), "conv1", x)
    from convemerge.analysis.agop import filter_covariance
    from convemerge.analysis.cnfa import pearson_correlation

    assert rec["table"][0]["pearson"] == pytest.approx(pearson_correlation(g, filter_covariance(net.conv1)), abs=1e-5)


def test_top_outputs_picks_the_largest_mean_logits():
    class Fixed(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :5] + torch.tensor([0.0, 5.0, -1.0, 3.0, 1.0])

    assert top_outputs(Fixed(), torch.zeros(4, 1, 2, 3), 2) == [1, 3]
    assert top_outputs(Fixed(), torch.zeros(4, 1, 2, 3), 99) == [0, 1, 2, 3, 4]


def test_images_of_another_dataset_use_the_runs_standardisation(trained, shared_datasets):
    from convemerge.data import load_dataset

    x = run_images(trained, 30, dataset="fashion-mnist", data_dir=shared_datasets)
    assert x.shape == (30, 1, 28, 28)
    own = load_dataset("mnist-5k", "train")
    raw = (x * own.std[0] + own.mean[0]) * 255.0  # undone with MNIST-5k's statistics: whole pixel values
    assert torch.allclose(raw, raw.round(), atol=2e-3) and raw.min() > -0.5 and raw.max() < 255.5
    fashion = load_dataset("fashion-mnist", "train", root=shared_datasets)
    rows = {bytes(r) for r in fashion.images.reshape(len(fashion), -1).numpy()}
    assert {bytes(r) for r in raw.round().to(torch.uint8).reshape(30, -1).numpy()} <= rows
