"""Chat-template rendering at string-join speed.

Rendering a Jinja chat template costs ~100 µs a conversation, more than everything else the report
does. A template only places contents between fixed strings, so we render it once per conversation
*shape* (roles, names, which contents are empty) with placeholders as contents, and keep the result
as a plan: literal strings and content slots. A template that transforms or inspects contents
(`| trim`, `if '<think>' in content`) would break that; such shapes are detected (placeholders that
come back changed, or a first real conversation that renders differently) and rendered with Jinja.
"""

import re
from dataclasses import dataclass
from typing import Any

_SLOT = re.compile("\x00(\\d+)\x01")
_MAX_PLANS = 4096  # shapes differ only in roles and names; beyond this, render directly
_NAME_REFERENCE = re.compile(r"""['"]name['"]|\.name\b""")


@dataclass(frozen=True, slots=True)
class Plan:
    parts: tuple[str | int, ...]  # literal text, or the index of the message whose content goes there

    def render(self, contents: list[str]) -> str:
        return "".join(p if isinstance(p, str) else contents[p] for p in self.parts)


def _parse(text: str) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    pos = 0
    for match in _SLOT.finditer(text):
        if match.start() > pos:
            parts.append(text[pos : match.start()])
        parts.append(int(match.group(1)))
        pos = match.end()
    if pos < len(text):
        parts.append(text[pos:])
    return tuple(parts)


class TemplateRenderer:
    """Renders chats (lists of `{"role", "content"[, "name"]}`) exactly as `apply_chat_template`."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._plans: dict[tuple, Plan | None] = {}
        # Most templates ignore message names: then names (often one per example) are no part of a shape.
        self.uses_names = bool(_NAME_REFERENCE.search(tokenizer.chat_template or ""))

    def jinja(self, chat: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(chat, tokenize=False)

    def plan(self, chat: list[dict]) -> Plan | None:
        """The plan for this chat's shape, or None when the template must render it itself."""
        key = tuple((m["role"], self.uses_names and m.get("name"), m["content"] == "") for m in chat)
        try:
            return self._plans[key]
        except KeyError:
            pass
        plan = self._build(chat)
        if len(self._plans) < _MAX_PLANS:
            self._plans[key] = plan
        return plan

    def _build(self, chat: list[dict]) -> Plan | None:
        def probe(suffix: str) -> tuple[str | int, ...]:
            marked = [{**m, "content": m["content"] and f"\x00{i}\x01{suffix}"} for i, m in enumerate(chat)]
            return _parse(self.jinja(marked))

        plain = probe("")
        # Whitespace after each placeholder must come back untouched, beside the same literals.
        padded = probe(" \n")
        if _strip_after_slots(padded) != plain:
            return None
        plan = Plan(plain)
        if plan.render([m["content"] for m in chat]) != self.jinja(chat):
            return None
        return plan


def _strip_after_slots(parts: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """`padded` parts with the " \\n" added after each slot removed again."""
    out: list[str | int] = []
    pending = False
    for part in parts:
        if isinstance(part, int):
            if pending:
                return ()  # two slots without the padding between them: changed
            out.append(part)
            pending = True
            continue
        if pending:
            if not part.startswith(" \n"):
                return ()
            part = part[2:]
            pending = False
        if part:
            out.append(part)
    return () if pending else tuple(out)
