"""Cursor pagination of the services' list RPCs, as OpenAI's list endpoints do it."""

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def paginate(
    items: Sequence[T], after: str, limit: int, key: Callable[[T], Any] = lambda item: item.id
) -> tuple[list[T], bool]:
    """The items (a newest-first list) after the one whose id is `after`, and whether more follow."""
    limit = limit if limit > 0 else 20
    if after:
        ids = [key(item) for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    return list(items[:limit]), len(items) > limit
