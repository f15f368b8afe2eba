"""A small VLA-style token policy: camera image + instruction + proprioception -> transformer -> per-dimension
logits over action bins."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from policies.encoders import observed
from policies.normalizer import Normalizer
from policies.tokens import ActionTokenizer, InstructionTokenizer

IMAGE_KEY, INSTRUCTION_KEY = "rgb", "instruction"


class KeypointStem(nn.Module):
    """uint8 images (B, H, W, 3) -> (B, K, d) tokens, one per learned keypoint: two strided convolutions, then a
    spatial softmax per channel whose expected (x, y) locates what that channel detects (robomimic's trick for
    small objects), embedded with the keypoint's identity. Cheap enough to train on a CPU."""

    def __init__(self, d_model: int, keypoints: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, 32, 4, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(32, keypoints, 3, stride=2, padding=1),
        )  # fmt: skip
        self.embed = nn.Linear(2, d_model)
        self.identity = nn.Parameter(torch.randn(1, keypoints, d_model) * 0.02)
        # a sharp softmax from the start: with the small activations of a fresh network a temperature of 1 spreads
        # every keypoint over the whole image, and the gradient that would localise it is tiny
        self.log_scale = nn.Parameter(torch.full((1, keypoints, 1), 2.3))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.conv(image.permute(0, 3, 1, 2).float() / 127.5 - 1.0)  # (B, K, h, w)
        b, k, h, w = x.shape
        attention = (x.flatten(2) * self.log_scale.exp()).softmax(-1).view(b, k, h, w)
        ys = torch.linspace(-1, 1, h, device=x.device)
        xs = torch.linspace(-1, 1, w, device=x.device)
        points = torch.stack([(attention.sum(2) * xs).sum(-1), (attention.sum(3) * ys).sum(-1)], -1)  # (B, K, 2)
        return self.embed(points) + self.identity


def random_shift(image: torch.Tensor, pad: int) -> torch.Tensor:
    """Each image (B, H, W, C) shifted by up to `pad` pixels (edge-padded, random crop): the augmentation that lets
    a pixel policy generalise from few demonstrations (DrQ, robomimic's crop randomiser)."""
    b, h, w, _ = image.shape
    padded = F.pad(image.permute(0, 3, 1, 2).float(), (pad, pad, pad, pad), mode="replicate")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b))
    rows = (dy[:, None] + torch.arange(h)[None])[:, :, None].expand(b, h, w)
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, :].expand(b, h, w)
    out = padded[torch.arange(b)[:, None, None], :, rows, cols]  # (B, H, W, C)
    return out.to(image.dtype)


class VLAPolicy(nn.Module):
    """Tokens: image keypoints, instruction words, one token per low-dim observation (proprioception; a privileged
    teacher may add `state`) and one query per action dimension;
    the transformer's output at query k gives the logits of dimension k (all dimensions decoded in parallel)."""

    kind = "vla"

    def __init__(
        self,
        shape_meta: dict[str, Any],
        obs_keys: list[str],
        vocab: list[str],
        bins: int = 256,
        d_model: int = 64,
        layers: int = 2,
        heads: int = 4,
        image_tokens: int = 16,
        max_words: int = 16,
        temperature: float = 1.0,
        shift: int = 4,
        label_sigma: float = 2.0,
    ):
        super().__init__()
        meta = observed(shape_meta, obs_keys)
        self.low_dim = sorted(k for k in obs_keys if meta[k].get("type") == "low_dim")
        if INSTRUCTION_KEY not in obs_keys or IMAGE_KEY not in obs_keys:
            raise ValueError(f"a VLA observes {IMAGE_KEY!r} and {INSTRUCTION_KEY!r} (plus low-dim keys such as "
                             f"'proprio'), got {list(obs_keys)}")  # fmt: skip
        self.shape_meta, self.obs_keys, self.vocab = shape_meta, list(obs_keys), list(vocab)
        self.action_dim = int(shape_meta["action"]["shape"][0])
        self.bins, self.d_model, self.layers, self.heads = int(bins), int(d_model), int(layers), int(heads)
        self.image_tokens, self.max_words, self.temperature = int(image_tokens), int(max_words), float(temperature)
        self.shift, self.label_sigma = int(shift), float(label_sigma)
        self.tokenizer = ActionTokenizer(self.bins)
        self.words = InstructionTokenizer(self.vocab, self.max_words)

        d = self.d_model
        self.stem = KeypointStem(d, self.image_tokens)
        self.word_embed = nn.Embedding(len(self.vocab), d, padding_idx=0)
        self.word_pos = nn.Parameter(torch.randn(1, self.max_words, d) * 0.02)
        self.normalizers = nn.ModuleDict({k: Normalizer(tuple(meta[k]["shape"])) for k in self.low_dim})
        self.low_dim_embed = nn.ModuleDict({k: nn.Linear(int(meta[k]["shape"][0]), d) for k in self.low_dim})
        self.queries = nn.Parameter(torch.randn(1, self.action_dim, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, self.heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, self.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, self.bins)

    @property
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this network (saved next to its state_dict)."""
        return {
            "kind": self.kind, "shape_meta": self.shape_meta, "obs_keys": self.obs_keys, "vocab": self.vocab,
            "bins": self.bins, "d_model": self.d_model, "layers": self.layers, "heads": self.heads,
            "image_tokens": self.image_tokens, "max_words": self.max_words, "temperature": self.temperature,
            "shift": self.shift, "label_sigma": self.label_sigma,
        }  # fmt: skip

    def fit_normalizers(self, obs: dict[str, np.ndarray]) -> None:
        for k, norm in self.normalizers.items():
            norm.fit(obs[k])

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-dimension logits (B, A, bins)."""
        image = torch.as_tensor(obs[IMAGE_KEY])
        if self.training and self.shift > 0:
            image = random_shift(image, self.shift)
        ids, _ = self.words(obs[INSTRUCTION_KEY])
        return self.logits(image, ids, {k: torch.as_tensor(obs[k]) for k in self.low_dim})

    def logits(self, image: torch.Tensor, ids: torch.Tensor, low_dim: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-dimension logits (B, A, bins) from images, instruction word ids (B, max_words; 0 pads) and the
        low-dim observations: the part of `forward` an exported graph holds (the word split runs outside)."""
        b = image.shape[0]
        tokens = [self.stem(image), self.word_embed(ids) + self.word_pos]
        masks = [torch.zeros(b, self.image_tokens, dtype=torch.bool), ids == 0]
        for k in self.low_dim:
            x = self.normalizers[k](low_dim[k].float())
            tokens.append(self.low_dim_embed[k](x)[:, None])
            masks.append(torch.zeros(b, 1, dtype=torch.bool))
        tokens.append(self.queries.expand(b, -1, -1))
        masks.append(torch.zeros(b, self.action_dim, dtype=torch.bool))
        h = self.transformer(torch.cat(tokens, 1), src_key_padding_mask=torch.cat(masks, 1))
        return self.head(self.norm(h[:, -self.action_dim :]))  # (B, A, bins)

    def imitation_loss(
        self, obs: dict[str, torch.Tensor], target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy of the logits to the target actions (B, A), summed over dimensions: to the one-hot tokens, or
        with `label_sigma` > 0 to a Gaussian over the bins around each target (HL-Gauss)."""
        logits = self(obs)
        tokens = self.tokenizer.tokenize(target)
        if self.label_sigma > 0:
            soft = self.tokenizer.soft_targets(target, self.label_sigma)
            ce = -(soft * logits.log_softmax(-1)).sum(-1).sum(-1).mean()
        else:
            ce = F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="mean") * self.action_dim
        accuracy = (logits.argmax(-1) == tokens).float().mean()
        return ce, {"ce": ce.item(), "token_accuracy": accuracy.item()}

    def _obs(self, obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(np.asarray(obs[k])) for k in self.obs_keys}

    @torch.inference_mode()
    def act(self, obs: dict[str, np.ndarray], deterministic: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Batched actions (B, A) from the argmax tokens, or from tokens sampled at `temperature`; and the log-prob
        of the chosen tokens summed over dimensions (B,)."""
        logits = self(self._obs(obs))
        if deterministic:
            tokens = logits.argmax(-1)
        else:
            tokens = torch.distributions.Categorical(logits=logits / self.temperature).sample()
        log_prob = logits.log_softmax(-1).gather(-1, tokens[..., None])[..., 0].sum(-1)
        return self.tokenizer.detokenize(tokens).numpy(), log_prob.numpy()

    @torch.inference_mode()
    def label(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """As a teacher: argmax actions (B, A) and the per-dimension logits (B, A, bins)."""
        logits = self(self._obs(obs))
        return self.tokenizer.detokenize(logits.argmax(-1)).numpy(), logits.numpy().astype(np.float32)
