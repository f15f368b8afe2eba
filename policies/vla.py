"""A small VLA-style token policy: camera images + instruction + proprioception -> transformer -> per-dimension
logits over action bins (a privileged token teacher may read the state, with or without images)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from policies.base import ConfigError, Exporter, Graph, PolicyConfig, PolicyModule
from policies.encoders import check_image_encoder, observed
from policies.normalizer import Normalizer
from policies.tokens import ActionTokenizer, InstructionTokenizer
from policies.vision import ENCODERS, RandomShift, SpatialSoftmax, make_encoder

INSTRUCTION_KEY = "instruction"


class KeypointStem(nn.Module):
    """uint8 images (B, H, W, 3) -> (B, K, d) tokens, one per learned keypoint: two strided convolutions to K maps,
    spatial-softmax keypoints (`policies.vision.SpatialSoftmax`: where each map fires, robomimic's trick for small
    objects), each embedded with its identity. Cheap enough to train on a CPU."""

    def __init__(self, d_model: int, keypoints: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, 32, 4, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(32, keypoints, 3, stride=2, padding=1),
        )
        self.keypoints = SpatialSoftmax(keypoints, keypoints)
        self.embed = nn.Linear(2, d_model)
        self.identity = nn.Parameter(torch.randn(1, keypoints, d_model) * 0.02)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # checkpoints written before the shared SpatialSoftmax kept its scale as the stem's own `log_scale`
        if prefix + "log_scale" in state_dict:
            state_dict[prefix + "keypoints.log_scale"] = state_dict.pop(prefix + "log_scale")
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        points = self.keypoints(self.conv(image.permute(0, 3, 1, 2).float() / 127.5 - 1.0))  # (B, K, 2)
        return self.embed(points) + self.identity


class EncoderTokens(nn.Module):
    """uint8 images (B, H, W, 3) -> (B, K, d) tokens through one of `policies.vision.ENCODERS` (the Gaussian camera
    student's encoders): its feature vector (4 d wide), projected to K tokens. The shift is the policy's own (applied
    before)."""

    def __init__(self, encoder: str, image_shape: tuple[int, int, int], d_model: int, tokens: int, **options: Any):
        super().__init__()
        self.encoder = make_encoder(encoder, image_shape, 4 * d_model, shift=0, **options)
        self.project = nn.Linear(self.encoder.feature_dim, tokens * d_model)
        self.tokens, self.d_model = tokens, d_model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.project(self.encoder(image)).reshape(-1, self.tokens, self.d_model)


def camera_tokens(cfg: VLAConfig, image_shape: tuple[int, int, int]) -> nn.Module:
    """One camera's images -> `cfg.image_tokens` tokens of `cfg.d_model`, by `cfg.encoder`."""
    if cfg.encoder == "stem":
        return KeypointStem(cfg.d_model, cfg.image_tokens)
    return EncoderTokens(cfg.encoder, image_shape, cfg.d_model, cfg.image_tokens, **cfg.encoder_options)


@dataclass
class VLAConfig(PolicyConfig):
    """student=vla | vla_large: image keypoints, instruction words and low-dim observations -> a transformer ->
    logits over `bins` uniform bins per action dimension."""

    kind: ClassVar[str] = "vla"
    vocab: list[str] | None = None  # the word vocabulary; built from every task's instruction templates when None
    bins: int = 256  # OpenVLA-style: each action dimension in [-1, 1] to this many bins
    d_model: int = 64
    layers: int = 2
    heads: int = 4
    image_tokens: int = 16  # tokens per camera image (stem: one per spatial-softmax keypoint)
    encoder: str = "stem"  # stem: the keypoint-token stem; or a name of policies.vision.ENCODERS, projected to tokens
    encoder_options: dict[str, Any] = field(default_factory=dict)  # that encoder's own options (e.g. num_keypoints)
    max_words: int = 16
    temperature: float = 1.0  # when the student samples its tokens (on-policy collection)
    shift: int = 4  # random-shift augmentation of the image in training (pixels)
    label_sigma: float = 2.0  # SFT targets: a Gaussian of this many bins around the action (HL-Gauss); 0: one-hot

    def __post_init__(self) -> None:
        super().__post_init__()
        if INSTRUCTION_KEY not in self.obs_keys or len(self.obs_keys) < 2:
            raise ConfigError(
                f"a VLA observes camera images (e.g. 'front_rgb') and {INSTRUCTION_KEY!r} (plus low-dim keys such as "
                f"'proprio'; a privileged teacher may read 'state' instead of images), got {list(self.obs_keys)}"
            )
        if self.encoder == "stem":
            if self.encoder_options:
                raise ConfigError(
                    f"encoder_options are for an encoder of policies.vision; the stem takes none, got "
                    f"{dict(self.encoder_options)}"
                )
        elif self.encoder not in ENCODERS:
            raise ConfigError(
                f"encoder must be stem (the keypoint-token stem) or one of {', '.join(ENCODERS)}, got {self.encoder!r}"
            )
        else:
            check_image_encoder(self.encoder, self.shift, self.encoder_options)


class VLAPolicy(PolicyModule):
    """Tokens: image keypoints of each camera, instruction words, one token per low-dim observation (proprioception;
    a privileged teacher may add `state`) and one query per action dimension;
    the transformer's output at query k gives the logits of dimension k (all dimensions decoded in parallel)."""

    Config = VLAConfig

    def __init__(self, shape_meta: dict[str, Any], obs_keys: list[str], vocab: list[str] | None = None, **fields: Any):
        super().__init__(shape_meta, obs_keys, vocab=vocab, **fields)
        cfg: VLAConfig = self.cfg
        if cfg.vocab is None:
            raise ConfigError("a VLA policy needs its word vocabulary (vocab)")
        meta = observed(shape_meta, self.obs_keys)
        self.images = sorted(k for k in self.obs_keys if meta[k].get("type") == "rgb")  # one per camera
        self.low_dim = sorted(k for k in self.obs_keys if meta[k].get("type") == "low_dim")
        if not self.images and not self.low_dim:
            raise ConfigError(
                f"a VLA observes at least one camera image or low-dim observation besides the instruction; none of "
                f"{list(self.obs_keys)} is one"
            )
        self.vocab = list(cfg.vocab)
        self.bins, self.d_model, self.layers, self.heads = (
            int(cfg.bins),
            int(cfg.d_model),
            int(cfg.layers),
            int(cfg.heads),
        )
        self.image_tokens, self.max_words = int(cfg.image_tokens), int(cfg.max_words)
        self.temperature, self.label_sigma = float(cfg.temperature), float(cfg.label_sigma)
        self.shift = RandomShift(cfg.shift)  # training only: the identity in eval mode and in exported graphs
        self.tokenizer = ActionTokenizer(self.bins)
        self.words = InstructionTokenizer(self.vocab, self.max_words)

        d = self.d_model
        self.stems = nn.ModuleDict({k: camera_tokens(cfg, tuple(meta[k]["shape"])) for k in self.images})
        self.word_embed = nn.Embedding(len(self.vocab), d, padding_idx=0)
        self.word_pos = nn.Parameter(torch.randn(1, self.max_words, d) * 0.02)
        self.normalizers = nn.ModuleDict({k: Normalizer(tuple(meta[k]["shape"])) for k in self.low_dim})
        self.low_dim_embed = nn.ModuleDict({k: nn.Linear(int(meta[k]["shape"][0]), d) for k in self.low_dim})
        self.queries = nn.Parameter(torch.randn(1, self.action_dim, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, self.heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, self.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, self.bins)
        self.eval()  # built to act: no image augmentation until a fit switches it to training mode

    def fit_normalizers(self, obs: dict[str, np.ndarray]) -> None:
        for k, norm in self.normalizers.items():
            norm.fit(obs[k])

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-dimension logits (B, A, bins)."""
        tensors = self.tensors(obs, [*self.images, *self.low_dim])
        ids, _ = self.words(obs[INSTRUCTION_KEY])
        images = {k: self.shift(tensors[k]) for k in self.images}
        return self.logits(images, ids.to(self.device), {k: tensors[k] for k in self.low_dim})

    def logits(
        self, images: dict[str, torch.Tensor], ids: torch.Tensor, low_dim: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Per-dimension logits (B, A, bins) from each camera's images, instruction word ids (B, max_words; 0 pads)
        and the low-dim observations: the part of `forward` an exported graph holds (the word split runs outside)."""
        b = ids.shape[0]
        tokens = [self.stems[k](images[k]) for k in self.images] + [self.word_embed(ids) + self.word_pos]
        visible = {"dtype": torch.bool, "device": ids.device}
        masks = [torch.zeros(b, self.image_tokens * len(self.images), **visible), ids == 0]
        for k in self.low_dim:
            x = self.normalizers[k](low_dim[k].float())
            tokens.append(self.low_dim_embed[k](x)[:, None])
            masks.append(torch.zeros(b, 1, **visible))
        tokens.append(self.queries.expand(b, -1, -1))
        masks.append(torch.zeros(b, self.action_dim, **visible))
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

    @torch.inference_mode()
    def act(self, obs: dict[str, np.ndarray], deterministic: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Batched actions (B, A) from the argmax tokens, or from tokens sampled at `temperature`; and the log-prob
        of the chosen tokens summed over dimensions (B,)."""
        logits = self(obs)
        if deterministic:
            tokens = logits.argmax(-1)
        else:
            tokens = torch.distributions.Categorical(logits=logits / self.temperature).sample()
        log_prob = logits.log_softmax(-1).gather(-1, tokens[..., None])[..., 0].sum(-1)
        return self.tokenizer.detokenize(tokens).numpy(force=True), log_prob.numpy(force=True)

    @torch.inference_mode()
    def label(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """As a teacher: argmax actions (B, A) and the per-dimension logits (B, A, bins)."""
        logits = self(obs)
        return self.tokenizer.detokenize(logits.argmax(-1)).numpy(force=True), logits.numpy(force=True).astype(
            np.float32
        )


# ---- export -------------------------------------------------------------------------------------------------------
IDS_KEY = "instruction_ids"  # the exported graph reads the instruction as word ids; the runtime splits the words


class VLAGraph(nn.Module):
    """Images (one input per camera), instruction word ids and low-dim observations -> (argmax actions (B, 1, A),
    logits (B, A, bins))."""

    def __init__(self, policy: VLAPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p = self.policy
        n = len(p.images)
        images, ids, low_dim = dict(zip(p.images, inputs[:n])), inputs[n], dict(zip(p.low_dim, inputs[n + 1 :]))
        logits = p.logits(images, ids, low_dim)
        return self.policy.tokenizer.detokenize(logits.argmax(-1))[:, None], logits


def argmax_ties(logits: np.ndarray, tol: float) -> np.ndarray:
    """(N, A) True where a token policy's top two logits are within 2 tol: a tie that torch and onnxruntime may
    break either way, so the decoded actions may differ there by a bin."""
    top2 = np.sort(logits, -1)[..., -2:]
    return (top2[..., 1] - top2[..., 0]) <= 2 * tol


class VLAExporter(Exporter):
    """One graph: the argmax tokens decoded to actions, plus the logits; word ids in (the split into words runs in
    the runtime, by the contract's vocabulary)."""

    def graphs(self, policy: Any, obs: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, Graph]:
        ids = policy.words(obs[INSTRUCTION_KEY])[0].numpy()
        feeds = {**{k: obs[k] for k in policy.images}, IDS_KEY: ids, **{k: obs[k] for k in policy.low_dim}}
        return {"policy": Graph(VLAGraph(policy), list(feeds), ["actions", "logits"], feeds)}

    def contract(self, policy: Any, sampler_steps: int) -> dict[str, Any]:
        return {
            **super().contract(policy, sampler_steps),
            "instruction": {"key": INSTRUCTION_KEY, "vocab": policy.vocab, "max_words": policy.max_words},
            "bins": policy.bins,
        }

    def ties(self, policy: Any, obs: dict[str, np.ndarray], tol: float) -> np.ndarray:
        return argmax_ties(policy.label(obs)[1], tol)
