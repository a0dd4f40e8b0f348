"""VLAModel: vision tokens + instruction tokens fused by a Transformer, read out by an action head.

    image (B,3,H,W) --vision encoder--> visual tokens (B,N,d) --FiLM(instruction)--+
    [wrist image (B,3,W,W) --its own conv stem--> (B,Nw,d) --FiLM(instruction)-----+]  (config.wrist)
    instruction ids (B,T) --text encoder--> word tokens (B,T,d), sentence (B,d) ----+
    state (B,7) or None --linear / learned "no state"--> state token (B,1,d) -------+
                                                                                    v
         [readout | state | visual tokens | word tokens] --Transformer (pre-LN)--> readout (B,d)
                                                                                    v
                               action head: chunk of H future actions (B,H,7), normalised

What changed against the reference sketch (ARCHITECTURE section 2), and why:

* ``batch_first`` everywhere: the sketch concatenated on dim 1 with a sequence-first encoder.
* A dedicated learned readout token (the sketch read ``fused[:, 0]``, the first *image* token).
* Actions and state are normalised with stats stored as buffers (so checkpoints are self-contained).
* Action chunking (H future steps) and an optional separate gripper output (a logit, since the
  gripper command is open/closed, not a regression target).
* Proprioceptive state is an optional token, trained with state dropout so ``state=None`` works.
* Attention is exposed on request through an explicit softmax path; the fast path uses
  ``scaled_dot_product_attention`` and computes no weights.
* The ``default`` preset is sized for a 2-core CPU: a stride-4 conv stem with CoordConv channels
  (36 visual tokens at 96 px), FiLM from the instruction, d 128, 2 layers. ``reference`` keeps the
  sketch's size (ViT patches, d 512, 8 heads, 6 layers).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vla_demo.config import require
from vla_demo.constants import (ACTION, ACTION_DIM, COLOURS, GOAL_NAMES, GOAL_POSITIONS, MAX_OBJECTS, OBJECT_LABEL_FIELDS,
                                OBS_STATE, SHAPES, STATE_DIM, WORD_ROLES)


@dataclass
class ModelConfig:
    """Architecture of a :class:`VLAModel` (serialised into ``config.json``).

    Input / output:
        image_size: side of the square image the model sees (inputs are resized to it).
        action_dim, state_dim: sizes of the action and proprioceptive vectors.
        chunk_size: H, the number of future actions predicted at once.
    Vision:
        vision: ``conv`` (stride-4 stem, cheap), ``patch`` (ViT patches, the reference), or
            ``hf`` (a ``transformers`` backbone described by ``vision_spec``).
        wrist: also see the wrist camera (``conv`` vision only): a second conv stem of its own
            (and its own keypoints when ``keypoints`` > 0) whose tokens join the front camera's.
            The hand's camera shows the object relative to the fingers, which the front camera
            resolves poorly along its depth axis.
        wrist_size: side of the square wrist image (0: ``image_size``), (wrist_size/16)^2 tokens.
            The wrist camera is about half of a training step at 96 px. Tried on 2026-12-07 (seed
            1): at 48 px with 8 keypoints place and stack fell to 26% and 24% on training
            phrasings; at 64 px the family means were 84.0 / 84.0 / 74.4% against 90.8 / 83.6 / 86.8%
            (training phrasings, held-out phrasings, new combinations; experiment log).
        patch_size: ViT patch side for ``patch``.
        fine_stem: the front camera's conv stem reaches stride 4 in two steps (a 3x3 stride-2 conv,
            then a 2x2 stride-2 one) instead of one 4x4 stride-4 patch projection. At 96 px an
            object is 6-8 px wide, so a 4x4 patch sees a quarter of it through one linear map; the
            two-step start resolves edges and corners first (``conv`` vision only; the wrist
            camera, close to the objects, keeps the cheap stem). Tried once (2026-12-06, seed 1):
            worse at telling same-colour objects apart, not better (model card).
        coordconv: append x/y coordinate channels to the image (helps pixel-to-position mapping).
        film: modulate the visual tokens with the instruction (FiLM).
        keypoints: K instruction-conditioned spatial-softmax keypoints read from the conv stem's
            stride-8 feature map and added as K tokens (0 = none; ``conv`` vision only). Each is the
            expected image position under a learned, FiLM-modulated heat map, which gives the
            fusion sub-token precision about *where* the named object is.
        keypoint_values: what a keypoint's word attention pools: ``context`` (the text encoder's
            word tokens) or ``embedding`` (the words' own embeddings, built-in text encoder only).
            The attention still comes from the contextual tokens (which words name the object),
            but the pooled filter is then a sum over the words themselves, "green" plus "cylinder",
            so a colour-shape pair never named together is scored like the sum of its parts.
        keypoint_conjunction: each keypoint also scores a small hidden layer of its own (16
            channels) that its words shift *before* the nonlinearity, so a cell can score high only
            where both words match ("red" and "cube"). Without it a cell's score is linear in one
            shared hidden layer, roughly "red" plus "cube", and a red cylinder scores half-way: the
            shipped policy's first-frame target estimate was right in 99% of scenes without
            another object of the target's colour and 67-70% with one. Tried once (2026-12-06,
            seed 1): worse there, 39-45% (model card).
        keypoint_chroma: each keypoint also scores a colour-blind map of its camera: every pixel's
            saturation ((max - min) / max over RGB), through three small stride-2 convs
            (:class:`ChromaStem`, 32 channels at stride 8), under a filter its words choose. An
            object of any hue or shading is the same silhouette there, so what that map learns of
            "cube" from red, green and blue cubes was meant to hold for a yellow cube too, which no
            training scene shows. The main map sees colour and learnt shape as colour-shape pairs: every shape
            intervention on it gained same-colour scenes on trained pairs and lost new combinations
            (experiment log). Zero-initialised from a generator of its own, so a model with it starts
            as the same function, with the same other weights, as one without (about 1.4 M
            multiply-adds a camera and image, a fifth of the front stem; 1.16 x the default training
            step). Tried on 2026-12-08 over two seeds, each paired with the recipe's own: family
            means 80.2 / 77.4 / 68.0% against 86.0 / 81.8 / 81.4% (training phrasings, held-out
            phrasings, new combinations); seed 1 no better beside a same-colour object (experiment log).
    Language:
        vocab_size, max_text_len: built-in text encoder size; ``text`` is ``builtin`` or ``hf``.
        text_layers: Transformer layers of the built-in text encoder.
        text_window: 0 (global attention, absolute positions) or w > 0: each word reads only
            itself and the w words before it, with relative positions (:class:`TextEncoder`), so
            what a word means can depend on the words that mark its role but not on where it stands.
        text_global: with ``text_window`` > 0, how many of the last text layers attend globally
            (still without absolute positions): the windowed layers mark each word's role from its
            neighbours, then the global ones let every word read the whole instruction.
    Fusion:
        d_model, n_heads, n_layers, ff_mult, dropout.
    Head:
        head: ``continuous`` (MSE on normalised actions, the reference) or ``discrete``
            (``n_bins`` bins per dimension with cross-entropy, the RT-1/RT-2/OpenVLA scheme).
        separate_gripper: predict the gripper as an open/closed logit.
        head_hidden: hidden width of the MLP head.
        state_dropout: probability of hiding the state during training.
    Auxiliary:
        goal_head: also predict where the instructed object is and where it should go (from the
            readout and the keypoint positions) (``goal_positions``: 6 numbers, m). Scripted datasets label every frame, so
            the fusion is taught *which* object the words name instead of inferring it from the
            action loss alone; the prediction is an overlay in the app, never an input.
        goal_weight: weight of that auxiliary loss against the action loss.
        word_roles: supervise the words' roles (labels from the grammar's parser, ``WORD_ROLES``)
            with a per-word classifier on the text encoder (which word names the object to move,
            which the destination). Without it the roles of two named objects ("stack the red cube
            on the blue cube") are inferred from the action and goal losses alone.
        role_binding: with ``word_roles`` and two or more keypoints, also make keypoint 0 of each
            camera read the target's words and keypoint 1 the destination's (a loss on their word
            attention).
        role_weight: weight of those auxiliary losses.
        object_head: also classify the colour and the shape of every object in the scene from each
            camera's stride-8 feature map, read where the object's centre is (``object_labels``
            of scripted datasets), so the map that the keypoints score tells a cube from a
            cylinder of the same colour whatever the instruction (the action and goal losses
            teach it only through the named object). Tried once (2026-12-06, seed 1): on trained
            colour-shape combinations the target estimate with a same-colour object present rose
            from 59-67% to 78-83% of scenes, but rollouts did not, and new combinations fell from
            86.8% to 69.2% (model card, "An object head").
        object_weight: weight of that auxiliary loss.
        object_hue: with ``object_head``, the head learns shapes from copies of the first
            quarter (``HUE_SHARE``) of the training images of each camera, hue-rotated by a random angle per image, so
            colour cannot answer them: without it, in data where the held-out combinations never
            stand, colour predicts shape and the head learnt "yellow is never a cube" (0 of 101
            yellow cubes called cubes). Colours are still learnt from the images as they are. Costs
            a second pass of the stems' early layers over those rows, in training only (1.12 x the
            default step). Tried once (2026-12-07, seed 1): same-colour scenes 81 / 74% on
            phrasings (against 67 / 59%), new combinations 78.0% (against 86.8%), and the head still
            called 97-98% of blue cylinders and yellow cubes by their colour's trained shapes
            (experiment log, "An object head that learns shapes from recoloured images").
        object_hue_plain: with ``object_hue``, learn shapes from the plain maps as well, so the
            head that the copies taught colour-blind shapes is also the one read on plain images.
            Tried once (2026-12-07, seed 1): training phrasings 92.8% and held-out 91.2% family mean
            (the shipped policy 90.8 / 83.6%), new combinations 81.2% (shipped 86.8%); experiment
            log, "The same head learning shapes from plain images too".
    """

    preset: str = "default"
    image_size: int = 96
    action_dim: int = ACTION_DIM
    state_dim: int = STATE_DIM
    chunk_size: int = 8
    vision: str = "conv"
    wrist: bool = False
    wrist_size: int = 0
    patch_size: int = 16
    fine_stem: bool = False
    coordconv: bool = True
    film: bool = True
    keypoints: int = 0
    keypoint_values: str = "context"
    keypoint_conjunction: bool = False
    keypoint_chroma: bool = False
    text: str = "builtin"
    vocab_size: int = 64
    max_text_len: int = 24
    text_layers: int = 1
    text_window: int = 0
    text_global: int = 0
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 2
    ff_mult: int = 4
    dropout: float = 0.0
    head: str = "continuous"
    n_bins: int = 256
    separate_gripper: bool = True
    head_hidden: int = 256
    state_dropout: float = 0.3
    goal_head: bool = False
    goal_weight: float = 1.0
    word_roles: bool = False
    role_binding: bool = False
    role_weight: float = 0.5
    object_head: bool = False
    object_weight: float = 0.5
    object_hue: bool = False
    object_hue_plain: bool = False
    vision_spec: dict[str, Any] | None = field(default=None, repr=False)
    text_spec: dict[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        require(self.vision in ("conv", "patch", "hf"), f"vision must be conv, patch or hf, got {self.vision!r}")
        require(self.text in ("builtin", "hf"), f"text must be builtin or hf, got {self.text!r}")
        require(self.head in ("continuous", "discrete"), f"head must be continuous or discrete, got {self.head!r}")
        require(self.d_model % self.n_heads == 0, f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        require(self.chunk_size >= 1, f"chunk_size must be >= 1, got {self.chunk_size}")
        require(16 <= self.image_size <= 512, f"image_size must be in 16..512, got {self.image_size}")
        if self.vision == "conv":
            require(self.image_size % 16 == 0, f"the conv stem needs image_size divisible by 16, got {self.image_size}")
        if self.vision == "patch":
            require(self.image_size % self.patch_size == 0, f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})")
        require(0 <= self.text_window <= 16, f"text_window must be in 0..16, got {self.text_window}")
        require(0 <= self.text_global <= self.text_layers, f"text_global must be in 0..text_layers ({self.text_layers}), got {self.text_global}")
        require(not self.text_global or self.text_window, "text_global needs text_window > 0 (with 0 every layer is global)")
        require(0 <= self.keypoints <= 64, f"keypoints must be in 0..64, got {self.keypoints}")
        require(self.keypoint_values in ("context", "embedding"), f"keypoint_values must be context or embedding, got {self.keypoint_values!r}")
        require(self.keypoint_values == "context" or (self.keypoints and self.text == "builtin"),
                "keypoint_values='embedding' needs keypoints and the built-in text encoder")
        require(self.keypoints == 0 or self.vision == "conv", "keypoints need the conv vision encoder")
        require(not self.keypoint_conjunction or self.keypoints, "keypoint_conjunction needs keypoints")
        require(not self.keypoint_chroma or self.keypoints, "keypoint_chroma needs keypoints")
        require(not self.wrist or self.vision == "conv", "the wrist camera needs the conv vision encoder")
        require(self.wrist_size == 0 or (16 <= self.wrist_size <= 512 and self.wrist_size % 16 == 0),
                f"wrist_size must be 0 (image_size) or a multiple of 16 in 16..512, got {self.wrist_size}")
        require(not self.wrist_size or self.wrist, "wrist_size needs wrist")
        require(not self.fine_stem or self.vision == "conv", "fine_stem needs the conv vision encoder")
        require(self.vision != "hf" or self.vision_spec is not None, "vision='hf' needs a vision_spec")
        require(self.text != "hf" or self.text_spec is not None, "text='hf' needs a text_spec")
        require(2 <= self.n_bins <= 4096, f"n_bins must be in 2..4096, got {self.n_bins}")
        require(0.0 <= self.state_dropout < 1.0 and 0.0 <= self.dropout < 1.0, "dropout rates must be in [0, 1)")
        require(self.action_dim >= 2, f"action_dim must be >= 2, got {self.action_dim}")
        require(0.0 <= self.goal_weight <= 100.0, f"goal_weight must be in 0..100, got {self.goal_weight}")
        require(0.0 <= self.role_weight <= 100.0, f"role_weight must be in 0..100, got {self.role_weight}")
        require(not self.role_binding or self.word_roles, "role_binding needs word_roles (its labels)")
        require(not self.object_head or self.keypoints, "object_head needs keypoints (it reads their feature map)")
        require(not self.object_hue or self.object_head, "object_hue needs object_head (it trains that head's shape logits)")
        require(not self.object_hue_plain or self.object_hue, "object_hue_plain needs object_hue")
        require(0.0 <= self.object_weight <= 100.0, f"object_weight must be in 0..100, got {self.object_weight}")

    @property
    def wrist_image_size(self) -> int:
        """Side of the square wrist image the model sees."""
        return self.wrist_size or self.image_size

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ModelConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}: choose from {list(PRESETS)}")
        return cls(**{**PRESETS[name], "preset": name, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}")
        return cls(**d)


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "reference": dict(
        image_size=128, vision="patch", patch_size=16, coordconv=False, film=False,
        d_model=512, n_heads=8, n_layers=6, text_layers=2, head_hidden=256,
    ),
}


# ----------------------------------------------------------------------------- building blocks


class Attention(nn.Module):
    """Multi-head self-attention with an explicit path that returns the weights."""

    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, keep: torch.Tensor, need_weights: bool,
                bias: torch.Tensor | None = None, queries: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``keep`` (B, S): True where a key may be attended to. ``bias`` (nh, S, S), optional: an
        additive score per (query, key) pair (-inf forbids one) used *instead of* ``keep``.
        ``queries`` = Q: only the first Q tokens ask (output (B, Q, d)); all S still answer."""
        B, S, C = x.shape
        Q = S if queries is None else queries
        if Q == S:
            q, k, v = self.qkv(x).split(C, dim=2)
        else:  # the same weights, split: queries for Q tokens, keys and values for all S
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(x[:, :Q], w[:C], b[:C])  # (B, Q, C)
            k, v = F.linear(x, w[C:], b[C:]).split(C, dim=2)  # (B, S, C) x 2
        q, k, v = (t.view(B, t.size(1), self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, nh, Q or S, hs)
        mask = keep[:, None, None, :] if bias is None else bias.unsqueeze(0)  # (B, 1, 1, S) or (1, nh, S, S)
        p = self.dropout if self.training else 0.0
        if not need_weights:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
            weights = None
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, nh, Q, S)
            att = (att.masked_fill(~mask, float("-inf")) if bias is None else att + mask).softmax(dim=-1)
            weights = att
            y = F.dropout(att, p) @ v  # (B, nh, Q, hs)
        y = y.transpose(1, 2).reshape(B, Q, C)
        return self.proj(y), weights


class Block(nn.Module):
    """Pre-LN Transformer encoder layer (batch first)."""

    def __init__(self, d: int, n_heads: int, ff_mult: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, n_heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(d, ff_mult * d), nn.GELU(), nn.Linear(ff_mult * d, d), nn.Dropout(dropout))

    def forward(self, x, keep, need_weights=False, bias=None, queries=None):
        """``queries`` = Q: update (and return) only the first Q tokens, (B, Q, d); the others are
        only read, as keys and values. The fusion's last layer needs just the readout token."""
        a, w = self.attn(self.ln1(x), keep, need_weights, bias, queries)
        x = (x if queries is None else x[:, :queries]) + a
        return x + self.mlp(self.ln2(x)), w


def coord_channels(b: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) x and y coordinates in [-1, 1] (CoordConv)."""
    ys = torch.linspace(-1, 1, h, device=like.device, dtype=like.dtype)
    xs = torch.linspace(-1, 1, w, device=like.device, dtype=like.dtype)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=0)  # (2, H, W)
    return grid.unsqueeze(0).expand(b, -1, -1, -1)


class ConvStem(nn.Module):
    """Cheap vision encoder: 4x4 stride-4 patches (or, ``fine``, a 3x3 stride-2 conv and a 2x2
    stride-2 one), then two stride-2 convs -> (S/16)^2 tokens."""

    def __init__(self, image_size: int, d: int, coordconv: bool, fine: bool = False):
        super().__init__()
        self.coordconv = coordconv
        c_in = 3 + 2 * coordconv
        start = ([nn.Conv2d(c_in, 16, 3, stride=2, padding=1), nn.GELU(), nn.Conv2d(16, 32, 2, stride=2)] if fine
                 else [nn.Conv2d(c_in, 32, 4, stride=4)])  # -> (B, 32, S/4, S/4)
        self.early = nn.Sequential(
            *start, nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(),
        )
        self.late = nn.Conv2d(64, d, 3, stride=2, padding=1)
        self.feature_dim = 64  # channels of the stride-8 map that keypoints read
        g = image_size // 16
        self.grid = (g, g)
        self.image_size = image_size
        self.out_dim = d

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """The stride-8 feature map (B, 64, S/8, S/8) that keypoints read."""
        x = images * 2 - 1  # (B, 3, S, S) in [-1, 1]
        if self.coordconv:
            x = torch.cat([x, coord_channels(x.size(0), x.size(2), x.size(3), x)], dim=1)
        return self.early(x)

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (B, g*g, d) and the stride-8 feature map (B, 64, S/8, S/8)."""
        fmap = self.feature_map(images)
        return self.late(fmap).flatten(2).transpose(1, 2), fmap

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)[0]  # (B, g*g, d)


def hue_rotate(images: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate each image's colours about the grey axis of RGB space by its angle (radians), then
    clip to [0, 1]: (B, 3, H, W), (B,) -> (B, 3, H, W). Greys stay; a third of a turn maps pure red
    to pure green; in between, every hue of the same saturation occurs."""
    c, s = torch.cos(angles).view(-1, 1, 1), torch.sin(angles).view(-1, 1, 1)  # (B, 1, 1)
    eye = torch.eye(3, dtype=images.dtype, device=images.device)
    third = torch.full((3, 3), 1 / 3, dtype=images.dtype, device=images.device)  # k k^T, k = (1, 1, 1) / sqrt(3)
    cross = torch.tensor([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], dtype=images.dtype, device=images.device) / math.sqrt(3)
    rot = c * eye + s * cross + (1 - c) * third  # (B, 3, 3), Rodrigues' formula
    return torch.einsum("bij,bjhw->bihw", rot, images).clamp(0, 1)


CONJUNCTION_CHANNELS = 16  # each keypoint's own word-shifted hidden channels (``keypoint_conjunction``)
# Share of a batch's training images whose hue-rotated copies teach the object head shapes
# (``object_hue``): 16 of a 64-sample batch, and 8 of each 32-sample half when two processes share it.
HUE_SHARE = 0.25


def hue_rows(batch: int) -> int:
    """How many of a ``batch``'s images get a hue-rotated copy (``object_hue``): at least one."""
    return max(1, round(batch * HUE_SHARE))


CHROMA_CHANNELS = 32  # channels of the colour-blind map (``keypoint_chroma``)
CHROMA_SEED_OFFSET = 7919  # its weights draw from torch.initial_seed() + this, not the global stream


def saturation(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, 1, H, W): (max - min) / max over RGB, 0 on near-black pixels.
    The same for every hue of one saturation and for any brightness of one colour (shading scales
    all three channels): the table, tray, plate and robot are near 0, every object near 0.8-0.9."""
    hi, lo = images.amax(dim=1, keepdim=True), images.amin(dim=1, keepdim=True)
    return (hi - lo) / hi.clamp(min=0.05)


class ChromaStem(nn.Module):
    """A colour-blind feature map: saturation -> a 2x2 stride-2 conv and two 3x3 stride-2 convs,
    (B, 3, S, S) -> (B, ``channels``, S/8, S/8), the grid of the main stem's keypoint map."""

    def __init__(self, channels: int = CHROMA_CHANNELS):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 2, stride=2), nn.GELU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(16, channels, 3, stride=2, padding=1), nn.GELU(),
        )
        self.channels = channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(saturation(images) * 2 - 1)  # (B, channels, S/8, S/8)


class SpatialKeypoints(nn.Module):
    """Instruction-conditioned spatial softmax: a feature map -> K expected (x, y) positions -> K tokens.

    Each keypoint has a learned query that attends over the word tokens, so it reads the words it
    needs ("red cube" for the object to move, "blue cylinder" for where it goes) rather than one
    pooled sentence. That reading adds to the keypoint's filter over a 1x1-conv hidden layer of the
    map (a dynamic filter: one dot product per cell, cheap), the filter scores every cell, a softmax
    over the cells (learned temperature) turns the scores into a distribution, and its mean position
    in [-1, 1] becomes a token (a linear embedding of (x, y) plus a per-keypoint embedding).
    With ``chroma`` the words also choose a filter over a colour-blind map of the image
    (:class:`ChromaStem`), whose score adds to the cell's.
    """

    def __init__(self, channels: int, k: int, d: int, hidden: int = 64, conjunction: int = 0, chroma: bool = False):
        super().__init__()
        self.queries = nn.Parameter(torch.zeros(1, k, d))
        self.hidden = nn.Conv2d(channels, hidden, 1)
        self.conj = None
        if conjunction:  # a small hidden layer per keypoint, shifted by its words before the GELU
            self.conj = nn.ModuleDict({"hidden": nn.Conv2d(channels, conjunction, 1), "shift": nn.Linear(d, conjunction)})
            self.conj_score = nn.Parameter(torch.zeros(k, conjunction))  # zero at start: scores as without it
        self.film = nn.Linear(d, hidden)  # words -> filter offset (zero at start: a static filter)
        self.score = nn.Parameter(torch.zeros(k, hidden))
        self.score_bias = nn.Parameter(torch.zeros(k))
        self.log_temp = nn.Parameter(torch.zeros(1))
        self.embed = nn.Linear(2, d)
        self.ids = nn.Parameter(torch.zeros(1, k, d))
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        for p in (self.queries, self.ids):
            nn.init.normal_(p, std=0.02)
        nn.init.normal_(self.score, std=hidden ** -0.5)
        self.chroma = None
        if chroma:
            self._build_chroma(k, d)

    def _build_chroma(self, k: int, d: int) -> None:
        """The colour-blind map and its word-chosen filters, drawn from a generator of their own
        (the global stream, and so every other weight of the model, is as without them; both
        cameras' maps start alike) and scoring zero at the start (both filter parts are zero)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch.initial_seed() + CHROMA_SEED_OFFSET)
            self.chroma = ChromaStem()
            self.chroma_film = nn.Linear(d, self.chroma.channels)
        nn.init.zeros_(self.chroma_film.weight)
        nn.init.zeros_(self.chroma_film.bias)
        self.chroma_score = nn.Parameter(torch.zeros(k, self.chroma.channels))

    def read_words(self, words: torch.Tensor, text_mask: torch.Tensor, values: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, d) word tokens, (B, T) mask -> each keypoint's attention-pooled ``values``
        (default: the word tokens) (B, K, d) and its attention over the words (B, K, T)."""
        logits = self.queries @ words.transpose(1, 2) / math.sqrt(words.size(-1))  # (B, K, T)
        keep = text_mask.bool() | ~text_mask.bool().any(dim=1, keepdim=True)  # empty text: uniform over pads
        att = logits.masked_fill(~keep.unsqueeze(1), float("-inf")).softmax(-1)
        return att @ (words if values is None else values), att

    def positions(self, fmap: torch.Tensor, words: torch.Tensor, text_mask: torch.Tensor,
                  values: torch.Tensor | None = None, images: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, h, w), (B, T, d), (B, T), optional (B, T, d) -> (B, K, 2) expected (x, y) in
        [-1, 1], and the word attention (B, K, T) that chose each keypoint's filter. ``images``
        (B, 3, 8h, 8w): the camera's images, needed with ``chroma``."""
        B, _, h, w = fmap.shape
        read, att = self.read_words(words, text_mask, values)
        filters = self.score + self.film(read)  # (B, K, hidden)
        hid = F.gelu(self.hidden(fmap)).flatten(2)  # (B, hidden, h*w)
        scores = filters @ hid + self.score_bias[:, None]  # (B, K, h*w)
        if self.conj is not None:
            pre = self.conj["hidden"](fmap).flatten(2)  # (B, c, h*w)
            own = F.gelu(pre.unsqueeze(1) + self.conj["shift"](read).unsqueeze(-1))  # (B, K, c, h*w)
            scores = scores + torch.einsum("kc,bkcn->bkn", self.conj_score, own)
        if self.chroma is not None:
            if images is None:
                raise ValueError("these keypoints also score a colour-blind map: pass the camera's images")
            cmap = self.chroma(images).flatten(2)  # (B, c, h*w)
            scores = scores + (self.chroma_score + self.chroma_film(read)) @ cmap  # (B, K, h*w)
        p = (scores * self.log_temp.exp()).softmax(dim=-1)
        grid = coord_channels(1, h, w, fmap).flatten(2)[0]  # (2, h*w): x, y per cell
        return p @ grid.t(), att  # (B, K, 2), (B, K, T)

    def forward(self, fmap: torch.Tensor, words: torch.Tensor, text_mask: torch.Tensor,
                values: torch.Tensor | None = None, images: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Tokens (B, K, d), the positions (B, K, 2) they embed, and the word attention (B, K, T)."""
        pos, att = self.positions(fmap, words, text_mask, values, images)
        return self.embed(pos) + self.ids, pos, att


class GoalHead(nn.Module):
    """Where the instructed object is and where it should go, (B, 6) normalised, from the readout
    and, when there are keypoints, their positions (the precise image coordinates the fusion's
    coarse tokens lack). Gradients reach the keypoint heat maps through the positions."""

    def __init__(self, d: int, keypoints: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d + 2 * keypoints, hidden), nn.GELU(), nn.Linear(hidden, len(GOAL_NAMES)))

    def forward(self, h: torch.Tensor, kp_pos: torch.Tensor | None) -> torch.Tensor:
        x = h if kp_pos is None else torch.cat([h, kp_pos.flatten(1)], dim=-1)  # (B, d + 2K)
        return self.net(x)


class PatchEmbed(nn.Module):
    """ViT-style linear patch embedding (the reference design's vision encoder)."""

    def __init__(self, image_size: int, patch: int, d: int):
        super().__init__()
        self.proj = nn.Conv2d(3, d, patch, stride=patch)
        g = image_size // patch
        self.grid = (g, g)
        self.image_size = image_size
        self.out_dim = d

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images * 2 - 1).flatten(2).transpose(1, 2)  # (B, g*g, d)


class TextEncoder(nn.Module):
    """Small Transformer over word embeddings; returns word tokens and a masked-mean sentence vector.

    ``window`` = 0: every word attends to every word, and learned absolute positions say where each
    stands. ``window`` = w > 0: word t attends only to itself and the w words before it, with a
    learned score per head and offset (relative positions, no absolute ones), so after L layers a
    word's token depends on the L * w words before it and on nothing else. The role a noun plays is
    marked in English by the words just before it ("on the red cube" is a destination wherever it
    stands in the sentence); with absolute positions and global attention, a handful of templates is
    also fitted by word-order rules ("the first object named moves") that do not carry over to new
    phrasings. Instructions are right-padded, so the causal window never reaches a pad from a word.
    ``n_global`` (with a window): the last ``n_global`` layers attend to every word, unbanded and
    still without absolute positions, so a word's token can carry the whole instruction once the
    windowed layers below have marked its role.
    """

    def __init__(self, vocab_size: int, max_len: int, d: int, n_heads: int, n_layers: int, ff_mult: int, dropout: float,
                 window: int = 0, n_global: int = 0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d)
        self.window = window
        self.n_banded = n_layers - n_global if window else 0
        self.pos = nn.Parameter(torch.zeros(1, max_len, d)) if window == 0 else None
        self.rel = nn.Parameter(torch.zeros(self.n_banded, n_heads, window + 1)) if window else None  # score per offset
        self.blocks = nn.ModuleList(Block(d, n_heads, ff_mult, dropout) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d)
        self.out_dim = d
        if self.pos is not None:
            nn.init.normal_(self.pos, std=0.02)

    def band(self, layer: int, T: int, like: torch.Tensor) -> torch.Tensor:
        """(nh, T, T) additive scores: the learned offset score where 0 <= query - key <= window, else -inf."""
        t = torch.arange(T, device=like.device)
        offset = t[:, None] - t[None, :]  # (T, T): query - key
        inside = (offset >= 0) & (offset <= self.window)
        scores = self.rel[layer][:, offset.clamp(0, self.window)]  # (nh, T, T)
        return scores.masked_fill(~inside, float("-inf")).to(like.dtype)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T = ids.size(1)
        x = self.embed(ids)  # (B, T, d)
        if self.pos is not None:
            x = x + self.pos[:, :T]
        keep = mask | ~mask.any(dim=1, keepdim=True)  # an empty instruction still attends (to pads)
        for i, blk in enumerate(self.blocks):
            x, _ = blk(x, keep, bias=self.band(i, T, x) if i < self.n_banded else None)
        x = self.ln(x)
        m = mask.unsqueeze(-1).to(x.dtype)
        sentence = (x * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, d)
        return x, sentence


# ----------------------------------------------------------------------------- the model


class VLAModel(nn.Module):
    """Vision-language-action model (see the module docstring for the data flow).

    Args:
        vision_encoder: module mapping (B, 3, H, W) images in [0, 1] to (B, N, d_v) tokens, with
            ``grid`` (gh, gw) and ``out_dim`` attributes.
        language_encoder: module mapping (ids (B, T), mask (B, T)) to (tokens (B, T, d_t),
            sentence (B, d_t)), with an ``out_dim`` attribute.
        action_dim: size of the action vector (7 here).
        config: the architecture; defaults to the ``default`` preset.
    """

    def __init__(self, vision_encoder: nn.Module, language_encoder: nn.Module, action_dim: int = ACTION_DIM,
                 config: ModelConfig | None = None):
        super().__init__()
        cfg = config or ModelConfig(action_dim=action_dim)
        if cfg.action_dim != action_dim:
            cfg = dataclasses.replace(cfg, action_dim=action_dim)
        self.config = cfg
        d, A, H = cfg.d_model, cfg.action_dim, cfg.chunk_size
        self.vision = vision_encoder
        self.language = language_encoder
        self.tokenizer = None  # attached by the policy (train_vla tokenizes string batches with it)
        self.grid = tuple(vision_encoder.grid)
        n_vis = self.grid[0] * self.grid[1]
        self.vis_proj = nn.Linear(vision_encoder.out_dim, d) if vision_encoder.out_dim != d else nn.Identity()
        self.txt_proj = nn.Linear(language_encoder.out_dim, d) if language_encoder.out_dim != d else nn.Identity()
        self.vis_pos = nn.Parameter(torch.zeros(1, n_vis, d))
        self.film = nn.Linear(d, 2 * d) if cfg.film else None
        self.keypoints = self._keypoints(vision_encoder)
        self.wrist_vision = self.wrist_keypoints = self.wrist_pos = None
        if cfg.wrist:  # the hand's camera: its own stem, keypoints and positions (its view is unlike the front's)
            self.wrist_vision = ConvStem(cfg.wrist_image_size, d, cfg.coordconv)
            self.wrist_keypoints = self._keypoints(self.wrist_vision)
            self.wrist_pos = nn.Parameter(torch.zeros(1, (cfg.wrist_image_size // 16) ** 2, d))
        self.readout = nn.Parameter(torch.zeros(1, 1, d))
        self.state_proj = nn.Linear(cfg.state_dim, d)
        self.no_state = nn.Parameter(torch.zeros(1, 1, d))
        self.type_emb = nn.Parameter(torch.zeros(4, d))  # readout, state, vision, language
        self.blocks = nn.ModuleList(Block(d, cfg.n_heads, cfg.ff_mult, cfg.dropout) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(d)
        n_cont = A - 1 if cfg.separate_gripper else A
        per_step = n_cont * (cfg.n_bins if cfg.head == "discrete" else 1) + (1 if cfg.separate_gripper else 0)
        self.head = nn.Sequential(nn.Linear(d, cfg.head_hidden), nn.ReLU(), nn.Linear(cfg.head_hidden, H * per_step))
        self.goal_head = GoalHead(d, cfg.keypoints) if cfg.goal_head else None
        self.role_head = nn.Linear(d, len(WORD_ROLES)) if cfg.word_roles else None
        self.object_heads = None
        if cfg.object_head:  # per camera: colour logits then shape logits of the feature under an object's centre
            stems = [vision_encoder] + ([self.wrist_vision] if self.wrist_vision is not None else [])
            self.object_heads = nn.ModuleList(nn.Linear(st.feature_dim, len(COLOURS) + len(SHAPES)) for st in stems)
        # Normalisation (replaced from dataset stats by the trainer; identity-ish defaults).
        self.register_buffer("action_mean", torch.zeros(A))
        self.register_buffer("action_std", torch.ones(A))
        self.register_buffer("action_low", -torch.ones(A))
        self.register_buffer("action_high", torch.ones(A))
        self.register_buffer("state_mean", torch.zeros(cfg.state_dim))
        self.register_buffer("state_std", torch.ones(cfg.state_dim))
        self.register_buffer("goal_mean", torch.zeros(len(GOAL_NAMES)))
        self.register_buffer("goal_std", torch.ones(len(GOAL_NAMES)))
        self._init_weights()

    def _init_weights(self) -> None:
        for p in (self.vis_pos, self.wrist_pos, self.readout, self.no_state, self.type_emb):
            if p is not None:
                nn.init.normal_(p, std=0.02)
        if self.film is not None:  # start as the identity modulation
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    # ------------------------------------------------------------------ normalisation
    def set_stats(self, stats: dict[str, Any]) -> None:
        """Set normalisation from dataset stats ``{"action": {"mean", "std", "q01", "q99"}, "observation.state": ...}``."""
        def t(x):
            return torch.as_tensor(x, dtype=torch.float32)

        a = stats[ACTION]
        self.action_mean.copy_(t(a["mean"]))
        self.action_std.copy_(t(a["std"]).clamp(min=1e-3))
        self.action_low.copy_(t(a.get("q01", a.get("min"))))
        self.action_high.copy_(torch.maximum(t(a.get("q99", a.get("max"))), self.action_low + 1e-3))
        for key, mean, std in ((OBS_STATE, self.state_mean, self.state_std), (GOAL_POSITIONS, self.goal_mean, self.goal_std)):
            if key in stats:
                mean.copy_(t(stats[key]["mean"]))
                std.copy_(t(stats[key]["std"]).clamp(min=1e-3))

    # ------------------------------------------------------------------ forward
    def encode(self, images, ids, text_mask, state, need_weights: bool = False, wrist=None):
        """Fuse the modalities. Returns (readout (B, d), per-layer attention list or None,
        front keypoint positions (B, K, 2) or None, ``aux``: the text encoder's word tokens (B, T, d),
        each camera's keypoint word attention (B, K, T) and feature map (B, 64, h, w) or None, for
        the auxiliary losses)."""
        B = images.size(0)
        words, sentence = self.language(ids, text_mask)
        words, sentence = self.txt_proj(words), self.txt_proj(sentence)  # (B, T, d), (B, d)
        text_mask = text_mask.bool()
        values = self.language.embed(ids) if self.config.keypoint_values == "embedding" else None  # (B, T, d): what keypoints pool
        film = self.film(sentence).unsqueeze(1).chunk(2, dim=-1) if self.film is not None else None  # (B, 1, d) x 2
        vis, kp_pos, kp_att, fmap = self._camera(self.vision, self.keypoints, self.vis_pos, images, words, text_mask, film, values)  # (B, N + K, d)
        aux = {"words": words, "keypoint_words": [] if kp_att is None else [kp_att], "feature_maps": [fmap]}
        if self.wrist_vision is not None:
            ws = self.config.wrist_image_size
            if wrist is None or tuple(wrist.shape) != (B, images.size(1), ws, ws):
                got = None if wrist is None else tuple(wrist.shape)
                raise ValueError(f"this model also sees the wrist camera: pass wrist images shaped {(B, images.size(1), ws, ws)}, got {got}")
            hand, _, hand_att, hand_map = self._camera(self.wrist_vision, self.wrist_keypoints, self.wrist_pos, wrist, words, text_mask, film, values)
            if hand_att is not None:
                aux["keypoint_words"].append(hand_att)
            aux["feature_maps"].append(hand_map)
            vis = torch.cat([vis, hand], dim=1)  # (B, N + K + N_wrist + K, d)
        if state is None:
            st = self.no_state.expand(B, -1, -1)
        else:
            st = self.state_proj((state - self.state_mean) / self.state_std).unsqueeze(1)  # (B, 1, d)
            if self.training and self.config.state_dropout > 0:
                drop = torch.rand(B, 1, 1, device=st.device) < self.config.state_dropout
                st = torch.where(drop, self.no_state.expand(B, -1, -1), st)
        te = self.type_emb
        x = torch.cat([self.readout.expand(B, -1, -1) + te[0], st + te[1], vis + te[2], words + te[3]], dim=1)
        ones = torch.ones(B, 2 + vis.size(1), dtype=torch.bool, device=x.device)
        keep = torch.cat([ones, text_mask.bool()], dim=1)  # (B, S)
        attn = [] if need_weights else None
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            # Only the readout is read after the last layer: it alone asks there (S -> 1 queries,
            # the same function; ~40% less fusion compute at 2 layers and 130 tokens).
            x, w = blk(x, keep, need_weights, queries=1 if i == last else None)
            if need_weights:
                attn.append(w)  # (B, nh, S, S); the last layer's (B, nh, 1, S)
        return self.ln_f(x[:, 0]), attn, kp_pos, aux

    def _keypoints(self, stem: nn.Module) -> SpatialKeypoints | None:
        """One camera's keypoints over its conv stem's feature map (None without keypoints)."""
        cfg = self.config
        if not cfg.keypoints:
            return None
        return SpatialKeypoints(stem.feature_dim, cfg.keypoints, cfg.d_model, conjunction=CONJUNCTION_CHANNELS if cfg.keypoint_conjunction else 0,
                                chroma=cfg.keypoint_chroma)

    def _camera(self, stem, keypoints, pos, images, words, text_mask, film, values=None):
        """One camera's tokens (B, N + K, d): FiLM-modulated visual tokens, then its keypoint tokens;
        the keypoint positions (B, K, 2) and word attention (B, K, T), or None without keypoints, and
        the stride-8 feature map the keypoints score (B, 64, S/8, S/8) or None without keypoints.
        ``values`` (B, T, d): what the keypoints pool under their word attention (None: the word tokens)."""
        if keypoints is not None:
            tokens, fmap = stem.features(images)
            kps, kp_pos, kp_att = keypoints(fmap, words, text_mask, values, images)  # (B, K, d), (B, K, 2), (B, K, T)
        else:
            tokens, kps, kp_pos, kp_att, fmap = stem(images), None, None, None, None
        vis = self.vis_proj(tokens) + pos  # (B, N, d)
        if film is not None:
            gamma, beta = film
            vis = vis * (1 + gamma) + beta
        return (vis if kps is None else torch.cat([vis, kps], dim=1)), kp_pos, kp_att, fmap

    def forward(self, images, ids, text_mask, state=None, need_weights: bool = False, wrist=None) -> dict[str, Any]:
        """Predict an action chunk.

        Args:
            images: (B, 3, H, W) float in [0, 1], H = W = ``config.image_size``.
            wrist: the wrist camera's images (B, 3, wrist_image_size, wrist_image_size) (only for ``config.wrist``).
            ids, text_mask: (B, T) token ids and bool mask (True on real tokens).
            state: (B, state_dim) in physical units, or None.
            need_weights: also return per-layer attention (B, heads, S, S) and token layout.

        Returns:
            ``{"out": (B, H, per_step) raw head output, "goal": (B, 6) normalised goal positions
            or None, "roles": {"logits": (B, T, len(WORD_ROLES)), "keypoint_words": [(B, K, T) per
            camera]} or None (``word_roles``), "feature_maps": [(B, 64, S/8, S/8) per camera] or None
            (``object_head``), "attention": list | None, "layout": dict}``.
        """
        h, attn, kp_pos, aux = self.encode(images, ids, text_mask, state, need_weights, wrist)
        B, H = h.size(0), self.config.chunk_size
        out = self.head(h).view(B, H, -1)  # (B, H, per_step)
        goal = self.goal_head(h, kp_pos) if self.goal_head is not None else None  # (B, 6), normalised
        n_vis = self.grid[0] * self.grid[1]
        per_camera = n_vis + self.config.keypoints
        t0 = 2 + per_camera + (self.wrist_pos.size(1) + self.config.keypoints if self.wrist_vision is not None else 0)
        layout = {"state": 1, "vision": (2, 2 + n_vis), "keypoints": (2 + n_vis, 2 + per_camera),
                  "wrist": (2 + per_camera, t0), "language": (t0, t0 + ids.size(1))}
        roles = None
        if self.role_head is not None:
            roles = {"logits": self.role_head(aux["words"]),
                     "keypoint_words": aux["keypoint_words"] if self.config.role_binding else []}
        maps = aux["feature_maps"] if self.object_heads is not None else None
        shape_maps = self._hue_maps(images, wrist) if maps is not None and self.training and self.config.object_hue else None
        return {"out": out, "goal": goal, "roles": roles, "feature_maps": maps, "shape_maps": shape_maps,
                "attention": attn, "layout": layout}

    def _hue_maps(self, images: torch.Tensor, wrist: torch.Tensor | None) -> list[torch.Tensor]:
        """Per camera (front, then wrist), the feature maps (n, 64, h, w) of the first n =
        ``hue_rows(B)`` images hue-rotated by one random angle per sample (``object_hue``)."""
        n = hue_rows(images.size(0))
        angles = torch.rand(n, device=images.device, dtype=images.dtype) * (2 * math.pi)  # (n,)
        cams = [(self.vision, images)] + ([(self.wrist_vision, wrist)] if self.wrist_vision is not None else [])
        return [stem.feature_map(hue_rotate(x[:n], angles)) for stem, x in cams]

    # ------------------------------------------------------------------ heads: decode and loss
    def _split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, H, per_step) -> continuous part and gripper logit (B, H) or None."""
        if self.config.separate_gripper:
            return out[..., :-1], out[..., -1]
        return out, None

    def decode(self, out: torch.Tensor) -> torch.Tensor:
        """Head output -> actions (B, H, A) in physical units."""
        cfg = self.config
        cont, grip = self._split(out)
        n_cont = cfg.action_dim - (1 if grip is not None else 0)
        if cfg.head == "discrete":
            bins = cont.view(*cont.shape[:2], n_cont, cfg.n_bins).argmax(-1)  # (B, H, n_cont)
            centres = (bins.float() + 0.5) / cfg.n_bins
            low, high = self.action_low[:n_cont], self.action_high[:n_cont]
            acts = low + centres * (high - low)
        else:
            acts = cont * self.action_std[:n_cont] + self.action_mean[:n_cont]
        if grip is not None:
            acts = torch.cat([acts, (grip > 0).float().unsqueeze(-1)], dim=-1)  # 1 = open
        return acts

    def decode_goal(self, goal: torch.Tensor) -> torch.Tensor:
        """Goal head output (B, 6) -> target and destination positions in metres."""
        return goal * self.goal_std + self.goal_mean

    def goal_loss(self, goal: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """MSE on normalised positions over the rows that carry labels (NaN rows carry none)."""
        labelled = torch.isfinite(target).all(-1)  # (B,)
        if not labelled.any():
            return goal.sum() * 0.0  # keeps the graph (and DDP's gradient buckets) complete
        norm = (target[labelled] - self.goal_mean) / self.goal_std
        return ((goal[labelled] - norm) ** 2).mean()

    def role_loss(self, roles: dict[str, Any], target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Word-role cross-entropy over labelled words, and the keypoint binding loss (zero without
        ``role_binding``): minus the log of the attention keypoint 0 (1) puts on the target's
        (destination's) words, over the rows that name one. ``target`` (B, T): role indices, -1
        where unlabelled."""
        logits = roles["logits"]  # (B, T, R)
        zero = logits.sum() * 0.0  # keeps the graph (and DDP's gradient buckets) complete
        ce = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-1) if (target >= 0).any() else zero
        binds = []
        for att in roles["keypoint_words"]:  # (B, K, T) per camera
            for k, role in enumerate((1, 2)[: att.size(1)]):
                on = (target == role).to(att.dtype)  # (B, T)
                rows = on.sum(1) > 0
                if rows.any():
                    binds.append(-torch.log((att[:, k] * on).sum(1)[rows].clamp(min=1e-6)).mean())
        bind = torch.stack(binds).mean() if binds else zero
        return ce, bind

    def object_logits(self, maps: list[torch.Tensor], labels: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per camera (front, then wrist): the object head's colour-then-shape logits (B, M,
        colours + shapes) read (bilinearly) from the feature map under each labelled object's
        centre, and which of them count (B, M): a labelled slot, and for the wrist one it sees.
        ``maps``: (B, C, h, w) per camera; ``labels``: (B, MAX_OBJECTS * 7) rows of ``OBJECT_LABEL_FIELDS``."""
        rows = labels.view(labels.size(0), MAX_OBJECTS, len(OBJECT_LABEL_FIELDS))  # (B, M, 7)
        out = []
        for cam, (fmap, head) in enumerate(zip(maps, self.object_heads)):
            uv = rows[..., 2:4] if cam == 0 else rows[..., 4:6]  # (B, M, 2) in [-1, 1] over the image
            seen = (rows[..., 0] >= 0) & (rows[..., 6] > 0.5 if cam else True)  # (B, M)
            feats = F.grid_sample(fmap, uv.unsqueeze(2), align_corners=False)  # (B, C, M, 1)
            out.append((head(feats.squeeze(-1).transpose(1, 2)), seen))
        return out

    def object_loss(self, maps: list[torch.Tensor], labels: torch.Tensor,
                    shape_maps: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Colour and shape cross-entropy of every labelled object in each camera
        (:meth:`object_logits`; each a mean over the cameras that see one), and the share of shapes
        told right (NaN when none is labelled). Shapes are read from ``shape_maps`` when given: the
        maps of hue-rotated copies of the first rows (``object_hue``), and from the plain maps too
        with ``object_hue_plain``."""
        rows = labels.view(labels.size(0), MAX_OBJECTS, len(OBJECT_LABEL_FIELDS))  # (B, M, 7)
        colour, shape = rows[..., 0].long(), rows[..., 1].long()  # (B, M), -1 in empty slots
        nc = len(COLOURS)
        coloured = self.object_logits(maps, labels)
        sources = [(coloured, shape)]  # where shapes are learnt: the plain maps, ...
        if shape_maps is not None:  # ... or the hue-rotated copies of the first n rows, with or without them
            n = shape_maps[0].size(0)
            sources = [(self.object_logits(shape_maps, labels[:n]), shape[:n])] + (sources if self.config.object_hue_plain else [])
        colour_terms = [F.cross_entropy(c_logits[c_seen][:, :nc], colour[c_seen]) for c_logits, c_seen in coloured if c_seen.any()]
        shape_terms, right, count = [], 0, 0
        for per_camera, target in sources:
            for s_logits, s_seen in per_camera:
                if s_seen.any():
                    logits = s_logits[s_seen][:, nc:]  # (n, shapes)
                    shape_terms.append(F.cross_entropy(logits, target[s_seen]))
                    right += int((logits.argmax(-1) == target[s_seen]).sum())
                    count += int(s_seen.sum())
        if not colour_terms and not shape_terms:  # keeps the graph (and DDP's gradient buckets) complete
            return sum(m.sum() for m in [*maps, *(shape_maps or [])]) * 0.0, torch.tensor(float("nan"))
        loss = sum(torch.stack(t).mean() for t in (colour_terms, shape_terms) if t)
        return loss, torch.tensor(right / count if count else float("nan"))

    def loss(self, out: torch.Tensor, actions: torch.Tensor, is_pad: torch.Tensor | None = None,
             goal: torch.Tensor | None = None, goal_target: torch.Tensor | None = None,
             roles: dict[str, Any] | None = None, role_target: torch.Tensor | None = None,
             maps: list[torch.Tensor] | None = None, object_target: torch.Tensor | None = None,
             shape_maps: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss for a chunk of target actions (B, H, A) in physical units, plus the
        auxiliary goal loss when the model has a goal head and the batch ``goal_positions``, the
        word-role losses when it has ``word_roles`` and the words' role labels (B, T), and the
        object loss when it has ``object_head``, its feature ``maps`` and the batch ``object_labels``
        (shapes from ``shape_maps`` with ``object_hue``)."""
        cfg = self.config
        valid = torch.ones(actions.shape[:2], dtype=torch.bool, device=actions.device) if is_pad is None else ~is_pad
        w = valid.float()
        denom = w.sum().clamp(min=1.0)
        cont, grip = self._split(out)
        n_cont = cfg.action_dim - (1 if grip is not None else 0)
        target = actions[..., :n_cont]
        logs: dict[str, float] = {}
        if cfg.head == "discrete":
            low, high = self.action_low[:n_cont], self.action_high[:n_cont]
            frac = ((target - low) / (high - low)).clamp(0, 1 - 1e-6)
            bins = (frac * cfg.n_bins).long()  # (B, H, n_cont)
            logits = cont.view(*cont.shape[:2], n_cont, cfg.n_bins)
            ce = F.cross_entropy(logits.reshape(-1, cfg.n_bins), bins.reshape(-1), reduction="none").view_as(bins)
            main = (ce.mean(-1) * w).sum() / denom
            logs["ce_loss"] = main.item()
        else:
            norm = (target - self.action_mean[:n_cont]) / self.action_std[:n_cont]
            main = (((cont - norm) ** 2).mean(-1) * w).sum() / denom
            logs["mse_loss"] = main.item()
        total = main
        if grip is not None:
            opened = (actions[..., -1] >= 0.5).float()
            bce = F.binary_cross_entropy_with_logits(grip, opened, reduction="none")
            g = (bce * w).sum() / denom
            logs["gripper_loss"] = g.item()
            total = total + g
        if goal is not None and goal_target is not None:
            aux = self.goal_loss(goal, goal_target)
            logs["goal_loss"] = aux.item()
            total = total + self.config.goal_weight * aux
        if roles is not None and role_target is not None:
            ce, bind = self.role_loss(roles, role_target)
            logs["role_loss"], logs["binding_loss"] = ce.item(), bind.item()
            total = total + self.config.role_weight * (ce + bind)
        if maps is not None and object_target is not None:
            obj, acc = self.object_loss(maps, object_target, shape_maps)
            logs["object_loss"] = obj.item()
            if not torch.isnan(acc):  # no labelled object in this batch: no accuracy to report
                logs["object_shape_acc"] = acc.item()
            total = total + self.config.object_weight * obj
        logs["loss"] = total.item()
        return total, logs


def build_model(config: ModelConfig) -> VLAModel:
    """Construct encoders and the model from a config (adapters rebuilt from their specs offline)."""
    if config.vision == "conv":
        vision: nn.Module = ConvStem(config.image_size, config.d_model, config.coordconv, fine=config.fine_stem)
    elif config.vision == "patch":
        vision = PatchEmbed(config.image_size, config.patch_size, config.d_model)
    else:
        from vla_demo.model.hf_encoders import HFVisionEncoder

        vision = HFVisionEncoder.from_spec(config.vision_spec)
    if config.text == "builtin":
        language: nn.Module = TextEncoder(
            config.vocab_size, config.max_text_len, config.d_model, config.n_heads, config.text_layers,
            config.ff_mult, config.dropout, config.text_window, config.text_global,
        )
    else:
        from vla_demo.model.hf_encoders import HFTextEncoder

        language = HFTextEncoder.from_spec(config.text_spec)
    return VLAModel(vision, language, config.action_dim, config)
