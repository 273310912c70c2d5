"""A validation error: its line, a code (the cookbook's classes or our own), a message, a JSON path."""

from dataclasses import dataclass


@dataclass(slots=True)
class LineError:
    line: int  # 1-based; 0 for whole-file errors
    code: str
    message: str
    path: str = ""  # inside the line, e.g. messages[2].content

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.path + ': ' if self.path else ''}{self.message}"


def json_path(loc: tuple) -> str:
    """`("messages", 2, "content")` → `messages[2].content`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
