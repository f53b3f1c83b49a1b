"""Chat templates for GGUF files that carry none, chosen by the vocabulary's turn markers.

Base checkpoints (Gemma 3 270m) ship without tokenizer.chat_template, while their vocabulary
still has the family's turn tokens; llama.cpp falls back the same way. No model names involved."""

from __future__ import annotations

from typing import Optional

# Gemma 3's own template (its instruct checkpoints ship it): a leading system message joins the
# first user turn, and roles must alternate (templates.py adapts conversations to that).
GEMMA_TURNS = '{{ bos_token }}\n{%- if messages[0][\'role\'] == \'system\' -%}\n    {%- if messages[0][\'content\'] is string -%}\n        {%- set first_user_prefix = messages[0][\'content\'] + \'\\n\\n\' -%}\n    {%- else -%}\n        {%- set first_user_prefix = messages[0][\'content\'][0][\'text\'] + \'\\n\\n\' -%}\n    {%- endif -%}\n    {%- set loop_messages = messages[1:] -%}\n{%- else -%}\n    {%- set first_user_prefix = "" -%}\n    {%- set loop_messages = messages -%}\n{%- endif -%}\n{%- for message in loop_messages -%}\n    {%- if (message[\'role\'] == \'user\') != (loop.index0 % 2 == 0) -%}\n        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}\n    {%- endif -%}\n    {%- if (message[\'role\'] == \'assistant\') -%}\n        {%- set role = "model" -%}\n    {%- else -%}\n        {%- set role = message[\'role\'] -%}\n    {%- endif -%}\n    {{ \'<start_of_turn>\' + role + \'\\n\' + (first_user_prefix if loop.first else "") }}\n    {%- if message[\'content\'] is string -%}\n        {{ message[\'content\'] | trim }}\n    {%- elif message[\'content\'] is iterable -%}\n        {%- for item in message[\'content\'] -%}\n            {%- if item[\'type\'] == \'image\' -%}\n                {{ \'<start_of_image>\' }}\n            {%- elif item[\'type\'] == \'text\' -%}\n                {{ item[\'text\'] | trim }}\n            {%- endif -%}\n        {%- endfor -%}\n    {%- else -%}\n        {{ raise_exception("Invalid content type") }}\n    {%- endif -%}\n    {{ \'<end_of_turn>\\n\' }}\n{%- endfor -%}\n{%- if add_generation_prompt -%}\n    {{\'<start_of_turn>model\\n\'}}\n{%- endif -%}\n'

# ChatML, for vocabularies with <|im_start|>/<|im_end|> (Qwen, Hermes).
CHATML = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def fallback_template(tokens: list[str]) -> Optional[tuple[str, str, str]]:
    """(name, template, end-of-turn token) for a vocabulary with known turn markers, or None."""
    have = set(tokens)
    if {"<start_of_turn>", "<end_of_turn>"} <= have:
        return "gemma-turns", GEMMA_TURNS, "<end_of_turn>"
    if {"<|im_start|>", "<|im_end|>"} <= have:
        return "chatml", CHATML, "<|im_end|>"
    return None
