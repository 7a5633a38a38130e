"""What a model generated, as it streams: the text a stream without usage is counted from.

Cold path only. Every provider shape Lectr relays: OpenAI-style chunks (every choice's content,
reasoning, refusal, tool calls and the legacy function_call; a legacy completion's text), the Responses API's ``*.delta``
events and Anthropic's native content blocks.
"""

from __future__ import annotations

# Strings in a streamed delta that the model generated and the provider bills as completion:
# the answer, reasoning (DeepSeek's reasoning_content, OpenRouter's and vLLM's reasoning), a refusal.
_DELTA_TEXT_FIELDS = ("content", "reasoning_content", "reasoning", "refusal")
# Anthropic's native content_block_delta: text, a tool call's arguments, thinking.
_BLOCK_TEXT_FIELDS = ("text", "partial_json", "thinking")


def collect_generated(doc: dict, texts: list[str]) -> None:
    """Append what the model generated in this chunk, in every choice: text, reasoning, refusals,
    tool calls' names and arguments (and the legacy ``function_call``'s). Azure sends chunks with
    ``choices: []`` or no delta."""
    choices = doc.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                _delta_texts(delta, texts)
            elif isinstance(text := choice.get("text"), str) and text:  # legacy /v1/completions
                texts.append(text)
        return
    kind = doc.get("type")
    if not isinstance(kind, str):
        return
    delta = doc.get("delta")
    if isinstance(delta, str):
        # Responses API: response.output_text.delta, .function_call_arguments.delta, .refusal.delta...
        if kind.endswith(".delta") and "audio" not in kind:
            texts.append(delta)
    elif isinstance(delta, dict):  # Anthropic's content_block_delta
        _string_fields(delta, _BLOCK_TEXT_FIELDS, texts)
    block = doc.get("content_block")  # Anthropic's content_block_start: a tool call's name, any text
    if isinstance(block, dict):
        _string_fields(block, ("name", "text"), texts)


def _delta_texts(delta: dict, texts: list[str]) -> None:
    for field in _DELTA_TEXT_FIELDS:
        value = delta.get(field)
        if isinstance(value, str):
            if value:
                texts.append(value)
        elif isinstance(value, list):  # content as parts: [{"type": "text", "text": ...}]
            for part in value:
                if isinstance(part, dict):
                    _string_fields(part, ("text",), texts)
    calls = delta.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                _string_fields(function, ("name", "arguments"), texts)
    function = delta.get("function_call")
    if isinstance(function, dict):
        _string_fields(function, ("name", "arguments"), texts)


def _string_fields(holder: dict, fields: tuple[str, ...], texts: list[str]) -> None:
    for field in fields:
        value = holder.get(field)
        if isinstance(value, str) and value:
            texts.append(value)
