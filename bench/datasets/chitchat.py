"""Chit-Chat Challenge: 7,168 open-domain conversations, 258k messages by 1,315 senders, 2018
(BYU PCC lab), as bundled in ``chitchat-dataset`` 0.9.0 (``chitchat_dataset/dataset.json``).

The JSON maps a conversation id to ``{"messages": [[{"text", "timestamp", "sender"}, ...], ...],
"prompt", "ratings", "start"}``: each inner list is one turn of consecutive messages. Every
message becomes a ``chat_message`` of its sender (a chat handle) in the conversation's session;
a conversation of two senders is one session shared by both, which the envelope models.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from bench.datasets import Wheel
from graph.errors import InvalidInput

WHEEL = Wheel("chitchat-dataset", "0.9.0", "chitchat_dataset-0.9.0-py3-none-any.whl",
              "7bf89f36645e2d5ec87d53370c8e851b5a688479c7beb7079cb4c87fc5acea3e")
MEMBER = "chitchat_dataset/dataset.json"
SOURCE = "chitchat"
# The envelope's limit on a message's text (graph.events.ShortText).
MAX_TEXT = 4000


def events(text: str) -> Iterator[dict[str, Any]]:
    """Envelope dicts from ``dataset.json``, conversation by conversation; messages with no
    text are skipped."""
    try:
        conversations = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"chit-chat dataset is not JSON: {exc}") from None
    if not isinstance(conversations, dict):
        raise InvalidInput("chit-chat dataset: expected an object of conversations")
    for conversation_id, conversation in conversations.items():
        number = 0
        for turn in conversation.get("messages", []):
            for message in turn:
                body = (message.get("text") or "").strip()
                if not body:
                    continue
                number += 1
                yield {
                    "event_id": f"{SOURCE}-{conversation_id}-{number}",
                    "type": "chat_message",
                    "source": SOURCE,
                    "occurred_at": message["timestamp"],
                    "user": {"chat_handle": f"{SOURCE}-{message['sender']}"},
                    "session_id": f"{SOURCE}-{conversation_id}",
                    "properties": {"text": body[:MAX_TEXT], "channel": "chat"},
                }
