"""Cursor pagination shared by the list endpoints: `after` (an id) and `limit`, newest first."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Query
from tunery.common.v1 import common_pb2
from tunery_common.grpc_errors import ServiceError
from tunery_common.pagination import paginate as paginate_items

from tunery_gateway.errors import raise_openai_error

T = TypeVar("T")


@dataclass(frozen=True)
class Page:
    after: str | None
    limit: int

    def to_proto(self) -> common_pb2.PageRequest:
        return common_pb2.PageRequest(after=self.after or "", limit=self.limit)


def page_query(default: int, maximum: int) -> Callable[..., Page]:
    """A dependency reading `after` and `limit` (1..maximum, `default` when absent)."""

    def dependency(
        after: Annotated[str | None, Query(description="id of the last item of the previous page")] = None,
        limit: Annotated[int, Query(ge=1, le=maximum)] = default,
    ) -> Page:
        return Page(after or None, limit)

    return dependency


def paginate(items: Sequence[T], page: Page, id_of: Callable[[T], str]) -> tuple[list[T], bool]:
    """The page of `items` (already in list order) after `page.after`, and whether more follow."""
    try:
        return paginate_items(items, page.after or "", page.limit, id_of)
    except ServiceError as exc:
        raise_openai_error(400, exc.message, param=exc.param)
