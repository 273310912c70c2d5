"""Where the judge is: the configured endpoint, or by default this stack's own gateway.

The default goes through the gateway like any client (with the platform's internal key, which
the gateway never rate limits, else the `default` org's key that `tunery up` writes under
TUNERY_HOME), so the judge's requests are authenticated, logged and get the gateway's structured
output (`response_format` json_schema) like anyone else's.
"""

from openai import AsyncOpenAI
from tunery_common.settings import CommonSettings

from tunery_evaljudge.settings import EvalJudgeSettings


def judge_client(settings: EvalJudgeSettings, common: CommonSettings) -> AsyncOpenAI:
    base_url = settings.judge_base_url or f"http://{common.host}:{common.port}/v1"
    api_key = settings.judge_api_key or common.internal_api_key
    if api_key is None:
        key_file = common.home / "api_key"
        api_key = key_file.read_text().strip() if key_file.exists() else "unset"
    return AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=settings.judge_timeout_s, max_retries=2)
