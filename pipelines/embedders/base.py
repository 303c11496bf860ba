"""What every embedder offers the engine: a chip size, an alignment template, and embed()."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from pipelines.errors import FacewatchError
from pipelines.schemas import EmbedderInfo


class WeightsError(FacewatchError, RuntimeError):
    """Model weights are missing or wrong. The message says exactly how to supply them."""

    http_status = 500  # the server's own set-up: not the client's to fix


class Embedder(ABC):
    """A face embedder. Chips in (N, S, S, 3) RGB uint8; L2-normalised (N, D) float32 out.

    Scores between two embeddings are cosine similarities (dot products), higher is more alike.
    """

    name: str
    chip_size: int
    template: np.ndarray  # (5, 2) MTCNN landmark positions in chip pixels
    template_weights: np.ndarray | None = None  # (5,) how much each landmark counts in the fit
    default_threshold: float  # cosine similarity; see docs/accuracy.md for how it was set
    # the review tier's default (retrospective candidates); None: not measured for this one
    default_review_threshold: float | None = None
    # measured TPIR at the alert tier by enrolment photos per person ({1: .., 3: ..})
    measured_tpir: dict[int, float] = {}

    def __init__(self, device: torch.device, flip_average: bool = False):
        self.device = device
        self.flip_average = flip_average
        self._model: torch.nn.Module | None = None
        self._info: EmbedderInfo | None = None

    @property
    def info(self) -> EmbedderInfo:
        """Which embedding space this is; known from the weights file without loading it."""
        if self._info is None:
            self._info = self.identify()
        return self._info

    @abstractmethod
    def identify(self) -> EmbedderInfo:
        """Name, version (from the weights' hash) and dimension; raises WeightsError."""

    @abstractmethod
    def load(self) -> Embedder: ...

    @abstractmethod
    def _forward(self, chips: torch.Tensor) -> torch.Tensor:
        """(N, S, S, 3) uint8 on device -> (N, D) raw embeddings."""

    def model(self) -> torch.nn.Module:
        """The loaded network (``load`` first)."""
        if self._model is None:
            raise RuntimeError(f"{self.name}: the model is not loaded")
        return self._model

    @torch.inference_mode()
    def embed(self, chips: np.ndarray, batch_size: int = 64) -> np.ndarray:
        if self._model is None:
            self.load()
        if len(chips) == 0:
            return np.zeros((0, self.info.dim), np.float32)
        if chips.shape[1:] != (self.chip_size, self.chip_size, 3):
            raise ValueError(f"{self.name} needs {self.chip_size}px chips, got {chips.shape[1:]}")
        out = []
        for start in range(0, len(chips), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(chips[start : start + batch_size]))
            x = x.to(self.device)
            e = self._forward(x)
            if self.flip_average:
                e = e + self._forward(torch.flip(x, dims=[2]))
            out.append(torch.nn.functional.normalize(e.float(), dim=1).cpu())
        return torch.cat(out).numpy().astype(np.float32)

    @torch.inference_mode()
    def embed_views(self, views: np.ndarray) -> np.ndarray:
        """One embedding from several chips of the same face (test-time augmentation): each
        chip and its mirror image go through the network, the raw descriptors are summed,
        then normalised. (V, S, S, 3) uint8 in, (D,) float32 out."""
        if self._model is None:
            self.load()
        x = torch.from_numpy(np.ascontiguousarray(views)).to(self.device)
        raw = self._forward(x).float().sum(0) + self._forward(torch.flip(x, dims=[2])).float().sum(
            0
        )
        return torch.nn.functional.normalize(raw, dim=0).cpu().numpy().astype(np.float32)

    @torch.inference_mode()
    def embed_views_many(self, views: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """``embed_views`` for N faces at once, in batches of network passes: (N, V, S, S, 3)
        uint8 in, (N, D) float32 out: each row what ``embed_views`` gives its face (up to
        float rounding)."""
        if self._model is None:
            self.load()
        n, v = views.shape[:2]
        flat = np.ascontiguousarray(views.reshape(n * v, *views.shape[2:]))
        raw = []
        for start in range(0, len(flat), batch_size):
            x = torch.from_numpy(flat[start : start + batch_size]).to(self.device)
            raw.append((self._forward(x).float() + self._forward(torch.flip(x, dims=[2]))).cpu())
        summed = torch.cat(raw).reshape(n, v, -1).sum(1)
        return torch.nn.functional.normalize(summed, dim=1).numpy().astype(np.float32)
