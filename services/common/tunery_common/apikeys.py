"""API keys: `TUNERY_API_KEYS="key1:org1,key2:org2"`, kept only as SHA-256 hashes in memory."""

import hashlib
import hmac
import secrets
from pathlib import Path


class ApiKeyError(ValueError):
    pass


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_api_keys(spec: str) -> dict[str, str]:
    """Returns {sha256(key): org}. Raises ApiKeyError on a malformed entry."""
    keys: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, org = entry.rpartition(":")
        if not sep or not key or not org:
            raise ApiKeyError(f"TUNERY_API_KEYS entry {entry[:4]}… must be KEY:ORG")
        if not org.replace("-", "").replace("_", "").isalnum():
            raise ApiKeyError(f"org {org!r} in TUNERY_API_KEYS may hold only letters, digits, - and _")
        keys[hash_key(key)] = org
    return keys


class ApiKeys:
    def __init__(self, hashed: dict[str, str]):
        self._hashed = hashed

    @classmethod
    def from_spec(cls, spec: str) -> "ApiKeys":
        return cls(parse_api_keys(spec))

    def org_for(self, key: str) -> str | None:
        return self.org_for_hash(hash_key(key))

    def org_for_hash(self, digest: str) -> str | None:
        for known, org in self._hashed.items():
            if hmac.compare_digest(known, digest):
                return org
        return None


INTERNAL_ORG = "internal"  # the org of TUNERY_INTERNAL_API_KEY


def _ensure_key_file(path: Path) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("tunery-" + secrets.token_urlsafe(24) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def ensure_default_key(home: Path) -> str:
    """The `default` org's key spec, created once under TUNERY_HOME/api_key."""
    return f"{_ensure_key_file(home / 'api_key')}:default"


def ensure_internal_key(home: Path) -> str:
    """The platform services' own key (TUNERY_INTERNAL_API_KEY), created once under TUNERY_HOME."""
    return _ensure_key_file(home / "internal_api_key")
