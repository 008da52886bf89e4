"""How a prompt becomes the student's input text; training and generation share it so they match."""

from __future__ import annotations

from typing import Literal

from ..errors import ConfigError

PromptStyle = Literal["auto", "chat", "plain"]
STYLES = ("auto", "chat", "plain")


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def resolve_style(tokenizer, style: str = "auto") -> str:
    """``"auto"`` becomes ``"chat"`` when the tokenizer has a chat template, else ``"plain"``."""
    if style not in STYLES:
        raise ConfigError(f"prompt_style: {style!r} is not one of {', '.join(STYLES)}")
    if style == "auto":
        return "chat" if has_chat_template(tokenizer) else "plain"
    if style == "chat" and not has_chat_template(tokenizer):
        raise ConfigError("prompt_style: 'chat' but the student's tokenizer has no chat template")
    return style


def build_messages(tokenizer, messages: list[dict[str, str]]) -> str:
    """Chat messages as input text: the chat template when there is one, else the contents joined."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages)


def build_input(tokenizer, text: str, style: str = "auto") -> str:
    """The input text for a prompt: chat template with ``text`` as the user message, or ``text`` itself."""
    if resolve_style(tokenizer, style) == "chat":
        return build_messages(tokenizer, [{"role": "user", "content": text}])
    return text
