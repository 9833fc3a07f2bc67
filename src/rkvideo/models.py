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

Two facts are about the runtime rather than the model: ``min_runtime``, the
oldest RKLLM release that runs the family's conversions (rknn-llm CHANGELOG,
Qengineering's READMEs), named when ``rkllm_init`` fails and checked by
``rkvideo doctor``; and ``cell``, the pixels per side of one vision token
(patch × merge), which turns a token count read from the encoder back into
the input side it was converted for.
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
# No Rockchip source gives SmolVLM tags. Qengineering's SmolVLM2 apps, written for the only public RK3588
# conversions, pass the Qwen tags, so the profiles use them (UNVERIFIED). The Hugging Face Idefics3 form,
# for a SmolVLM GGUF on llama.cpp or a conversion that wants it, is an override in [model].
SMOLVLM_TAGS = QWEN_TAGS
IDEFICS3_TAGS = ("<fake_token_around_image><global-img>", "<fake_token_around_image>", "<image>")


@dataclass(frozen=True)
class ChatTemplate:
    """The pieces around the user's turn. llama.cpp is fed them as text; RKLLM is given them with
    ``rkllm_set_chat_template`` at load, so both runtimes wrap the turn the same way (RKLLM cannot
    parse SmolVLM's template from the model file at all)."""
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
# The Hugging Face SmolVLM turn. Rockchip's maintainer (rknn-llm #420) splits it as system "", prefix
# "<|im_start|>" (no "User:"); which split the conversions expect is UNVERIFIED.
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
    min_runtime: str = "1.2.1"   # oldest RKLLM runtime for the family's conversions (1.2.1 = rkvideo's floor)
    cell: int = 0             # pixels per side of one vision token (patch × merge); 0 = not known

    def side_for(self, tokens: int) -> int | None:
        """The square input side that gives ``tokens`` vision tokens, when the arithmetic is known."""
        root = int(round(tokens ** 0.5))
        if self.cell <= 0 or tokens <= 0 or root * root != tokens:
            return None
        return root * self.cell

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


def _qwen(name, family, size, tokens, width, outputs, mean, std, stamp, unverified=(), notes="",
          min_runtime="1.2.1", patch=14):
    return Profile(name=name, family=family, input_size=size, tokens_per_image=tokens, embed_width=width,
                   encoder_outputs=outputs, img_start=QWEN_TAGS[0], img_end=QWEN_TAGS[1],
                   img_content=QWEN_TAGS[2], tag_tokens=2, normalize="encoder", mean=mean, std=std,
                   fill=127.5, chat=CHATML, timestamp=stamp, unverified=unverified, notes=notes,
                   min_runtime=min_runtime, cell=2 * patch)


def _internvl(name, width, min_runtime, unverified=("tokens_per_image", "embed_width")):
    return Profile(name=name, family=name.rsplit("-", 1)[0], input_size=448, tokens_per_image=256,
                   embed_width=width, encoder_outputs=1, img_start=INTERNVL_TAGS[0], img_end=INTERNVL_TAGS[1],
                   img_content=INTERNVL_TAGS[2], tag_tokens=2, normalize="encoder", mean=IMAGENET_MEAN,
                   std=IMAGENET_STD, fill=127.5, chat=CHATML, timestamp="Frame{number}: ",
                   unverified=unverified, notes="T = (448/14)^2 x 0.25 (pixel shuffle), computed",
                   min_runtime=min_runtime, cell=28)


# Notes that hold for every size of a family (``rkvideo models`` shows them once, the JSON per profile).
FAMILY_NOTES = {
    "smolvlm2": (f"image tags: the Qwen tags Qengineering's SmolVLM2 apps pass, UNVERIFIED (no Rockchip source "
                 f"gives SmolVLM tags; the Hugging Face form is {IDEFICS3_TAGS[0]} / {IDEFICS3_TAGS[2]} / "
                 f"{IDEFICS3_TAGS[1]}, e.g. for a GGUF); chat template: the Hugging Face turn, set explicitly "
                 f"because RKLLM cannot parse it, its split UNVERIFIED (rknn-llm #420 passes system \"\", prefix "
                 f"\"<|im_start|>\")"),
}


def _smolvlm(name, tokens, width, notes=""):
    # 384 × 384: the input of Qengineering's RK3588 conversions of all three sizes, the only public ones.
    # tag_tokens: whether SmolVLM's vocabulary holds the Qwen tags as single tokens is not known; as
    # plain text each costs several, so the budget counts 16 per frame for the pair.
    return Profile(name=name, family="smolvlm2", input_size=384, tokens_per_image=tokens, embed_width=width,
                   encoder_outputs=1, img_start=SMOLVLM_TAGS[0], img_end=SMOLVLM_TAGS[1],
                   img_content=SMOLVLM_TAGS[2], tag_tokens=16, normalize="encoder", mean=HALF, std=HALF,
                   fill=127.5, chat=SMOL_CHAT, timestamp="Frame from {mmss}: ",
                   unverified=("tokens_per_image", "embed_width", "img_start", "img_end", "img_content", "chat"),
                   notes=notes, min_runtime="1.2.2")


QWEN2_STAMP = "Frame {number} at {seconds:.1f}s: "
QWEN3_STAMP = "<{seconds:.1f} seconds>"

PROFILES: dict[str, Profile] = {p.name: p for p in [
    _qwen("qwen2-vl-2b", "qwen2-vl", 392, 196, 1536, 1, CLIP_MEAN, CLIP_STD, QWEN2_STAMP),
    _qwen("qwen2-vl-7b", "qwen2-vl", 392, 196, 3584, 1, CLIP_MEAN, CLIP_STD, QWEN2_STAMP),
    _qwen("qwen2.5-vl-3b", "qwen2.5-vl", 392, 196, 2048, 1, CLIP_MEAN, CLIP_STD, QWEN2_STAMP,
          unverified=("embed_width",), notes="448 input gives 256 tokens, 476 gives 289"),
    _qwen("qwen3-vl-2b", "qwen3-vl", 448, 196, 2048, 4, HALF, HALF, QWEN3_STAMP,
          unverified=("embed_width",), notes="zoo 1.2.3+ encoders have 4 outputs; 1.2.2 had 1",
          min_runtime="1.2.3", patch=16),
    _qwen("qwen3-vl-4b", "qwen3-vl", 448, 196, 2560, 4, HALF, HALF, QWEN3_STAMP,
          unverified=("embed_width",), notes="zoo 1.2.3+ encoders have 4 outputs; 1.2.2 had 1",
          min_runtime="1.2.3", patch=16),
    _internvl("internvl3-1b", 896, "1.2.2"),
    _internvl("internvl3.5-1b", 1024, "1.2.3"),
    _internvl("internvl3.5-2b", 2048, "1.2.3"),
    _internvl("internvl3.5-4b", 2560, "1.2.3"),
    _internvl("internvl3.5-8b", 4096, "1.2.3"),
    # T for 256M/500M at 384 is (384/512)² of the HF processor's 64 at 512, i.e. 36: a scaling, not a
    # source; the warm-up reads the real count and names model.tokens_per_image when it differs.
    _smolvlm("smolvlm2-256m", 36, 576, notes="T = 36 scaled from the HF processor's 64 at 512"),
    _smolvlm("smolvlm2-500m", 36, 960, notes="T = 36 scaled from the HF processor's 64 at 512"),
    _smolvlm("smolvlm2-2.2b", 81, 2048, notes="T = 81: the HF processor's value at 384"),
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
    data["family_notes"] = FAMILY_NOTES.get(profile.family, "")
    return data
