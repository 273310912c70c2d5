"""What the HF engine completes: raw text prompts, and chat messages through the model's chat
template, tools included where the template supports them."""

import shutil
from pathlib import Path

import pytest
from tunery_common.basemodels import ensure_base_model
from tunery_inference.engines.errors import RequestError
from tunery_inference.engines.hf import GenerationParams, HFEngine

GREEDY = GenerationParams(max_tokens=8, temperature=0)
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
# A template in the style of tool-calling chat models: the tools go into the system turn, an
# assistant's calls and the tool answers into their own turns.
TOOLS_TEMPLATE = """\
{%- if tools %}<|im_start|>system
You may call these functions:
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'system' and loop.first and tools %}
{{- raise_exception('put the system prompt in tools') }}{% endif %}
<|im_start|>{{ message.role }}
{%- if message.tool_calls %}
{% for call in message.tool_calls %}<tool_call>{{ call.function | tojson }}</tool_call>{% endfor %}
{%- else %}
{{ message.content }}{% endif %}<|im_end|>
{% endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


@pytest.fixture(scope="module")
def tiny_dir(model_cache) -> Path:
    return ensure_base_model("tiny-random-llama", model_cache)


@pytest.fixture(scope="module")
def engine(tiny_dir) -> HFEngine:
    return HFEngine(tiny_dir, device="cpu")


@pytest.fixture(scope="module")
def tools_engine(tiny_dir, tmp_path_factory) -> HFEngine:
    """The tiny model with a chat template that renders tools."""
    folder = tmp_path_factory.mktemp("tools-model")
    shutil.copytree(tiny_dir, folder, dirs_exist_ok=True)
    (folder / "chat_template.jinja").write_text(TOOLS_TEMPLATE)
    return HFEngine(folder, device="cpu")


def test_a_text_prompt_is_completed_without_the_chat_template(engine):
    prompt = "Once upon a time"
    completion = engine.generate(prompt, None, GREEDY)
    ids = engine.tokenizer.encode(prompt)
    assert completion.prompt_tokens == len(ids)
    chat = engine.generate([{"role": "user", "content": prompt}], None, GREEDY)
    assert chat.prompt_tokens > completion.prompt_tokens  # the template adds its turns
    assert completion.completion_tokens == 8 and completion.finish_reason == "length"


def test_an_empty_text_prompt_is_refused(engine):
    with pytest.raises(RequestError) as info:
        engine.stream("", None, GREEDY)
    assert info.value.param == "prompt"


def test_a_text_prompt_over_the_context_names_the_prompt(engine):
    with pytest.raises(RequestError) as info:
        engine.stream("hello " * engine.context_length, None, GREEDY)
    assert (info.value.param, info.value.code) == ("prompt", "context_length_exceeded")


def test_a_template_without_tools_refuses_them(engine):
    """SmolLM2's template renders only role and content: tools would silently not reach the model."""
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    with pytest.raises(RequestError) as info:
        engine.stream(messages, None, GREEDY, tools=[WEATHER_TOOL])
    assert info.value.param == "tools" and "does not support tools" in info.value.message
    engine.generate(messages, None, GREEDY, tools=[])  # none given: nothing to refuse


def test_tools_reach_the_prompt_of_a_template_that_supports_them(tools_engine):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    without = tools_engine.generate(messages, None, GREEDY)
    with_tools = tools_engine.generate(messages, None, GREEDY, tools=[WEATHER_TOOL])
    rendered = tools_engine.tokenizer.apply_chat_template(
        messages, tools=[WEATHER_TOOL], add_generation_prompt=True, tokenize=False
    )
    assert "get_weather" in rendered
    assert with_tools.prompt_tokens == len(tools_engine.tokenizer.encode(rendered, add_special_tokens=False))
    assert with_tools.prompt_tokens > without.prompt_tokens


def test_tool_calls_and_tool_answers_reach_the_template(tools_engine):
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
    }
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "18C and sunny", "tool_call_id": "call_1"},
    ]
    completion = tools_engine.generate(messages, None, GREEDY, tools=[WEATHER_TOOL])
    rendered = tools_engine.tokenizer.apply_chat_template(
        messages, tools=[WEATHER_TOOL], add_generation_prompt=True, tokenize=False
    )
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>' in rendered
    assert "18C and sunny" in rendered
    assert completion.prompt_tokens == len(tools_engine.tokenizer.encode(rendered, add_special_tokens=False))


def test_a_template_that_refuses_the_messages_is_a_request_error(tools_engine):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    with pytest.raises(RequestError) as info:
        tools_engine.stream(messages, None, GREEDY, tools=[WEATHER_TOOL])
    assert info.value.param == "messages" and "put the system prompt in tools" in info.value.message


def test_tools_need_chat_messages(tools_engine):
    with pytest.raises(RequestError) as info:
        tools_engine.stream("raw text", None, GREEDY, tools=[WEATHER_TOOL])
    assert info.value.param == "tools"
