"""The message on the train queue: which job to run."""

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class JobRef:
    org: str
    id: str

    def encode(self) -> bytes:
        return json.dumps({"org": self.org, "id": self.id}).encode()

    @classmethod
    def decode(cls, data: bytes) -> "JobRef":
        obj = json.loads(data)
        return cls(org=obj["org"], id=obj["id"])
