"""Tokenizers of a VLA-style policy: continuous actions to bins (OpenVLA-style), instructions to word ids."""

from __future__ import annotations

import re

import numpy as np
import torch

PAD, UNK = "<pad>", "<unk>"


class ActionTokenizer:
    """Each action dimension in [low, high] to `bins` uniform bins; a token decodes to its bin's centre.

    A value on an inner bin edge belongs to the upper bin; values outside [low, high] are clipped first, so -1 is
    token 0 and +1 is token bins - 1.
    """

    def __init__(self, bins: int = 256, low: float = -1.0, high: float = 1.0):
        if bins < 2 or not high > low:
            raise ValueError(f"need bins >= 2 and high > low, got bins={bins}, [{low}, {high}]")
        self.bins, self.low, self.high = int(bins), float(low), float(high)
        self.width = (self.high - self.low) / self.bins

    def tokenize(self, action: torch.Tensor) -> torch.Tensor:
        """(..., A) float -> (..., A) int64 tokens."""
        if not torch.isfinite(action).all():
            raise ValueError("cannot tokenise NaN or inf actions: check the dataset's labels")
        x = action.clamp(self.low, self.high)
        return ((x - self.low) / self.width).floor().long().clamp_(0, self.bins - 1)

    def soft_targets(self, action: torch.Tensor, sigma_bins: float) -> torch.Tensor:
        """(..., A) -> (..., A, bins): a Gaussian of std `sigma_bins` bins around each value, integrated over each bin
        (HL-Gauss): cross-entropy to it tells a near miss from a far one, which one-hot labels do not."""
        if not torch.isfinite(action).all():
            raise ValueError("cannot tokenise NaN or inf actions: check the dataset's labels")
        edges = torch.linspace(self.low, self.high, self.bins + 1, device=action.device)
        x = action.clamp(self.low, self.high)[..., None]
        cdf = torch.special.ndtr((edges - x) / (sigma_bins * self.width))  # (..., A, bins + 1)
        mass = cdf[..., 1:] - cdf[..., :-1]
        return mass / mass.sum(-1, keepdim=True)  # the tails beyond [low, high] folded back by renormalising

    def detokenize(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., A) tokens -> (..., A) float bin centres."""
        return self.low + (tokens.float() + 0.5) * self.width


def words(text: str) -> list[str]:
    """Lower-case words of an instruction ("T-shaped" -> "t", "shaped")."""
    return re.findall(r"[a-z0-9]+", text.lower())


def build_vocab(texts: list[str]) -> list[str]:
    """A word vocabulary from instruction templates: pad and unknown first, then the words sorted."""
    return [PAD, UNK, *sorted({w for t in texts for w in words(t)})]


class InstructionTokenizer:
    """The `instruction` observation (UTF-8 bytes, zero padded) to word ids (B, max_words) and a padding mask.

    Unknown words map to <unk>; longer instructions are cut at `max_words`.
    """

    def __init__(self, vocab: list[str], max_words: int = 16):
        if vocab[:2] != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r}")
        self.vocab, self.max_words = list(vocab), int(max_words)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self._cache: dict[bytes, list[int]] = {}  # a few templates per task: decode each once

    def ids(self, text: str) -> list[int]:
        return [self.index.get(w, 1) for w in words(text)][: self.max_words]

    def __call__(self, instruction: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) uint8 -> ids (B, max_words) int64 and pad mask (B, max_words) bool (True where padding)."""
        raw = instruction.numpy(force=True) if torch.is_tensor(instruction) else instruction
        raw = np.asarray(raw, dtype=np.uint8)
        out = np.zeros((len(raw), self.max_words), dtype=np.int64)
        for i, row in enumerate(raw):
            key = row.tobytes()
            ids = self._cache.get(key)
            if ids is None:
                ids = self._cache[key] = self.ids(key.rstrip(b"\0").decode("utf-8", errors="replace"))
            out[i, : len(ids)] = ids
        ids = torch.from_numpy(out)
        return ids, ids == 0
