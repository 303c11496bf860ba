"""facenet-vggface2: the weights are never downloaded here, so every path to supplying them is
tested: the missing-weights error, bad files, and a local file imported by the CLI.

The "weights" files made below are a randomly initialised InceptionResnetV1 saved by the
test: a fake that only exercises loading (keys, shapes, hashes, the copy). Nothing here
claims that they recognise anyone.
"""

from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipelines.config import FacenetConfig, Settings
from pipelines.embedders.backends import FACENET_FILE, FacenetEmbedder, load_facenet_state
from pipelines.embedders.base import WeightsError
from pipelines.engine import FaceEngine
from pipelines.images import sha256_file

ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def fake_weights(tmp_path_factory) -> Path:
    """A random-init InceptionResnetV1 state dict with the logits.* keys the real file has."""
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(0)
    model = InceptionResnetV1(pretrained=None, classify=True, num_classes=8631)
    path = tmp_path_factory.mktemp("weights") / FACENET_FILE
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.integration  # builds the facenet network
def test_missing_weights_say_exactly_how_to_supply_them(torch_home):
    settings = Settings(embedder=FacenetConfig())
    with pytest.raises(WeightsError) as err:
        FaceEngine(settings, device="cpu").load(warmup=False)
    message = str(err.value)
    assert str(torch_home / "checkpoints" / FACENET_FILE) in message
    assert "facewatch models import-facenet" in message
    assert "never runs recognition on random weights" in message
    assert "embedder.weights" in message


def test_configured_path_that_does_not_exist(tmp_path, torch_home):
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(WeightsError, match="nowhere.pt"):
        FacenetEmbedder(FacenetConfig(weights=missing), CPU).load()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a readable PyTorch weights file"),
        (b"<html>404 not found</html>", "not a readable PyTorch weights file"),
    ],
)
def test_unreadable_files_are_refused(tmp_path, content, message):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    with pytest.raises(WeightsError, match=message):
        load_facenet_state(bad)


class NotWeights:
    """An arbitrary object: weights_only loading must refuse to unpickle it."""


def test_pickled_objects_are_not_unpickled(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"model": NotWeights()}, evil)
    with pytest.raises(WeightsError, match="not a readable PyTorch weights file"):
        load_facenet_state(evil)


def test_a_state_dict_of_another_network_is_refused(tmp_path):
    other = tmp_path / "other.pt"
    torch.save(collections.OrderedDict(weight=torch.zeros(3, 3)), other)
    with pytest.raises(WeightsError, match="not InceptionResnetV1 weights"):
        load_facenet_state(other)


def test_sha256_mismatch_is_refused(fake_weights):
    with pytest.raises(WeightsError, match="sha256 is"):
        load_facenet_state(fake_weights, sha256="0" * 64)


@pytest.mark.timeout(120)
@pytest.mark.integration  # builds the facenet network
def test_local_file_loads_with_logits_keys_ignored(fake_weights, torch_home):
    config = FacenetConfig(weights=fake_weights, sha256=sha256_file(fake_weights))
    embedder = FacenetEmbedder(config, CPU).load()
    assert embedder.info.dim == 512
    assert embedder.info.version == sha256_file(fake_weights)[:12]
    out = embedder.embed(torch.zeros(2, 160, 160, 3, dtype=torch.uint8).numpy())
    assert out.shape == (2, 512)


@pytest.mark.timeout(180)
@pytest.mark.integration  # the CLI in a subprocess
def test_cli_import_copies_the_checked_file_where_facenet_pytorch_looks(fake_weights, torch_home):
    done = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "models", "import-facenet", str(fake_weights)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=170,
    )
    assert done.returncode == 0, done.stderr
    target = torch_home / "checkpoints" / FACENET_FILE
    assert sha256_file(target) == sha256_file(fake_weights)
    # now the default configuration finds it without any path
    assert FacenetEmbedder(FacenetConfig(), CPU).info.dim == 512


@pytest.mark.timeout(180)
@pytest.mark.integration  # the CLI in a subprocess
def test_cli_import_refuses_a_bad_file_with_exit_2(tmp_path, torch_home):
    bad = tmp_path / FACENET_FILE
    bad.write_bytes(b"not weights")
    done = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "models", "import-facenet", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=170,
    )
    assert done.returncode == 2
    assert "not a readable PyTorch weights file" in done.stderr
    assert not (torch_home / "checkpoints" / FACENET_FILE).exists()
