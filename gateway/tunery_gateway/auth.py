"""API-key authentication: `Authorization: Bearer <key>` → the caller's org."""

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from tunery_common.apikeys import ApiKeys, hash_key

from tunery_gateway.errors import OpenAIError

# auto_error=False: a missing key gets our OpenAI error, not FastAPI's 403.
_bearer = HTTPBearer(auto_error=False, description="a Tunery API key (TUNERY_API_KEYS)")


def _unauthorized(message: str) -> OpenAIError:
    return OpenAIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


async def current_org(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    if credentials is None or not credentials.credentials:
        raise _unauthorized("Missing API key: send it as 'Authorization: Bearer <key>'.")
    api_keys: ApiKeys = request.app.state.api_keys
    key_hash = hash_key(credentials.credentials)
    org = api_keys.org_for_hash(key_hash)
    if org is None:
        raise _unauthorized("Incorrect API key provided.")
    request.state.key_hash = key_hash  # the rate limits' key, hashed once
    return org


Org = Annotated[str, Depends(current_org)]
