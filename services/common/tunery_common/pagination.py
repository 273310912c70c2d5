"""Cursor pagination of the services' list RPCs, as OpenAI's list endpoints do it."""

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tunery_common.grpc_errors import invalid

T = TypeVar("T")


def paginate(
    items: Sequence[T], after: str, limit: int, key: Callable[[T], Any] = lambda item: item.id
) -> tuple[list[T], bool]:
    """The items (a newest-first list) after the one whose id is `after`, and whether more follow.

    An `after` that names no item (e.g. one deleted since) is an error naming the cursor: an empty
    page would pass for the end of the list.
    """
    limit = limit if limit > 0 else 20
    if after:
        ids = [key(item) for item in items]
        if after not in ids:
            raise invalid(f"No item with id '{after}' to list after.", "after")
        items = items[ids.index(after) + 1 :]
    return list(items[:limit]), len(items) > limit
