"""Model profiles: what each supported vision-language model expects.

A profile holds the facts that decide whether output is right or silently
wrong: the encoder's input size, tokens per image, embedding width, number of
encoder outputs (Qwen3-VL's DeepStack), image tags, where normalisation
happens, and how prompts and timestamps are written. The figures come from
Rockchip's model zoo, demos and the Hugging Face processors (docs/board.md,
"Model families"). Facts no source confirmed are
listed in ``unverified``; every one of them can be overridden in the
``[model]`` section of config.toml, and the runtimes check token counts and
widths against the model files before any frame is encoded.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import UsageError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)

QWEN_TAGS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>")
INTERNVL_TAGS = ("<img>", "</img>", "<IMG_CONTEXT>")
# Derived from the HF Idefics3/SmolVLM single-image expansion; no RKLLM source.
SMOLVLM_TAGS = ("<fake_token_around_image><global-img>", "<fake_token_around_image>", "<image>")


@dataclass(frozen=True)
class ChatTemplate:
    """The pieces around the user's turn (used by runtimes that do not apply
    the template themselves; RKLLM applies the one parsed at conversion)."""
    system: str
    prefix: str
    postfix: str

    def wrap(self, user_text: str) -> str:
        return f"{self.system}{self.prefix}{user_text}{self.postfix}"


CHATML = ChatTemplate(
    system="<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n",
    prefix="<|im_start|>user\n",
    postfix="<|im_end|>\n<|im_start|>assistant\n",
)
SMOL_CHAT = ChatTemplate(system="<|im_start|>", prefix="User:", postfix="<end_of_utterance>\nAssistant:")


@dataclass(frozen=True)
class Profile:
    name: str                 # e.g. "qwen2-vl-2b"
    family: str               # e.g. "qwen2-vl"
    input_size: int           # encoder input is input_size × input_size RGB
    tokens_per_image: int     # T: vision tokens per frame
    embed_width: int          # D: the LLM's hidden size
    encoder_outputs: int      # 1, or 4 for Qwen3-VL DeepStack encoders (E = 4·D)
    img_start: str
    img_end: str
    img_content: str
    tag_tokens: int           # tokens the start+end tags cost per image
    normalize: str            # "encoder" (mean/std baked in) or "host"
    mean: tuple
    std: tuple
    fill: float               # letterbox colour, all channels
    chat: ChatTemplate
    timestamp: str            # format of a frame's timestamp in the prompt
    max_context: int = 4096   # stock RK3588 conversions
    unverified: tuple = ()    # field names no source confirmed
    notes: str = ""

    @property
    def encoder_width(self) -> int:
        """E: floats per vision token in the assembled buffer."""
        return self.embed_width * self.encoder_outputs

    def frame_tokens(self) -> int:
        """Context cost of one frame: its vision tokens plus its tags."""
        return self.tokens_per_image + self.tag_tokens

    def stamp(self, number: int, seconds: float) -> str:
        """How frame ``number`` (1-based) at ``seconds`` is introduced in the prompt."""
        minutes, secs = divmod(int(seconds), 60)
        return self.timestamp.format(number=number, seconds=seconds, mmss=f"{minutes:02d}:{secs:02d}")


def _qwen(name, family, size, tokens, width, outputs, mean, std, stamp, unverified=(), notes=""):
    return Profile(name=name, family=family, input_size=size, tokens_per_image=tokens, embed_width=width,
                   encoder_outputs=outputs, img_start=QWEN_TAGS[0], img_end=QWEN_TAGS[1],
                   img_content=QWEN_TAGS[2], tag_tokens=2, normalize="encoder", mean=mean, std=std,
                   fill=127.5, chat=CHATML, timestamp=stamp, unverified=unverified, notes=notes)


def _internvl(name, width, unverified=("tokens_per_image", "embed_width")):
    return Profile(name=name, family=name.rsplit("-", 1)[0], input_size=448, tokens_per_image=256,
                   embed_width=width, encoder_outputs=1, img_start=INTERNVL_TAGS[0], img_end=INTERNVL_TAGS[1],
                   img_content=INTERNVL_TAGS[2], tag_tokens=2, normalize="encoder", mean=IMAGENET_MEAN,
                   std=IMAGENET_STD, fill=127.5, chat=CHATML, timestamp="Frame{number}: ",
                   unverified=unverified, notes="T = (448/14)^2 x 0.25 (pixel shuffle), computed")


def _smolvlm(name, size, tokens, width):
    return Profile(name=name, family="smolvlm2", input_size=size, tokens_per_image=tokens, embed_width=width,
                   encoder_outputs=1, img_start=SMOLVLM_TAGS[0], img_end=SMOLVLM_TAGS[1],
                   img_content=SMOLVLM_TAGS[2], tag_tokens=3, normalize="encoder", mean=HALF, std=HALF,
                   fill=127.5, chat=SMOL_CHAT, timestamp="Frame from {mmss}: ",
                   unverified=("input_size", "tokens_per_image", "embed_width", "img_start", "img_end",
                               "img_content"),
                   notes="no official RKLLM tags; QE apps use the Qwen tags")


QWEN2_STAMP = "Frame {number} at {seconds:.1f}s: "
QWEN3_STAMP = "<{seconds:.1f} seconds>"

PROFILES: dict[str, Profile] = {p.name: p for p in [
    _qwen("qwen2-vl-2b", "qwen2-vl", 392, 196, 1536, 1, CLIP_MEAN, CLIP_STD, QWEN2_STAMP),
    _qwen("qwen2-vl-7b", "qwen2-vl", 392, 196, 3584, 1, CLIP_MEAN, CLIP_STD, QWEN2_STAMP),
    _qwen("qwen2.5-vl-3b", "qwen2.5-vl", 392, 196, 2048, 1, CLIP_MEAN, CLIP_STD, QWEN2_STAMP,
          unverified=("embed_width",), notes="448 input gives 256 tokens, 476 gives 289"),
    _qwen("qwen3-vl-2b", "qwen3-vl", 448, 196, 2048, 4, HALF, HALF, QWEN3_STAMP,
          unverified=("embed_width",), notes="zoo 1.2.3+ encoders have 4 outputs; 1.2.2 had 1"),
    _qwen("qwen3-vl-4b", "qwen3-vl", 448, 196, 2560, 4, HALF, HALF, QWEN3_STAMP,
          unverified=("embed_width",), notes="zoo 1.2.3+ encoders have 4 outputs; 1.2.2 had 1"),
    _internvl("internvl3-1b", 896),
    _internvl("internvl3.5-1b", 1024),
    _internvl("internvl3.5-2b", 2048),
    _internvl("internvl3.5-4b", 2560),
    _internvl("internvl3.5-8b", 4096),
    _smolvlm("smolvlm2-256m", 512, 64, 576),
    _smolvlm("smolvlm2-500m", 512, 64, 960),
    _smolvlm("smolvlm2-2.2b", 384, 81, 2048),
]}

# Config keys in [model] that override profile fields of the same name.
OVERRIDABLE = ("input_size", "tokens_per_image", "embed_width", "encoder_outputs", "img_start", "img_end",
               "img_content", "normalize", "max_context")


class UnknownProfile(UsageError, KeyError):
    """No profile of that name; a KeyError too, for callers that look profiles up like a dict."""

    def __str__(self) -> str:
        return f"unknown model profile {self.args[0]!r}; known: {', '.join(PROFILES)} (see `rkvideo models`)"


def get(name: str) -> Profile:
    try:
        return PROFILES[name.lower()]
    except KeyError:
        raise UnknownProfile(name) from None


def resolve(model_config) -> Profile:
    """The configured profile with the [model] overrides applied."""
    profile = get(model_config.profile)
    changes = {key: getattr(model_config, key) for key in OVERRIDABLE if getattr(model_config, key)}
    if not changes:
        return profile
    overridden = tuple(k for k in profile.unverified if k not in changes)
    return dataclasses.replace(profile, unverified=overridden, **changes)


def as_dict(profile: Profile) -> dict:
    data = dataclasses.asdict(profile)
    data["chat"] = dataclasses.asdict(profile.chat)
    data["encoder_width"] = profile.encoder_width
    data["unverified"] = list(profile.unverified)
    return data
