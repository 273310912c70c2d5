"""Large answers (file contents, adapter downloads) are spooled to an anonymous temporary file,
then streamed from it: memory stays flat whatever their size."""

from collections.abc import Iterator
from typing import IO


def stream_spooled(file: IO[bytes], size: int = 1 << 16) -> Iterator[bytes]:
    with file:  # closing the anonymous temporary file deletes it, even if the client leaves
        file.seek(0)
        while chunk := file.read(size):
            yield chunk
