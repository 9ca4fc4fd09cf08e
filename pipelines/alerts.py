"""Announcing a failed run to a Slack-compatible webhook; no message repeats the (secret) URL."""

import httpx


class AlertError(Exception):
    """The webhook could not be reached or refused the message."""


def post_alert(webhook_url: str, text: str) -> None:
    """Post one short message (1,500 characters at most, within 10 s)."""
    text = text[:1499] + "…" if len(text) > 1500 else text
    try:
        response = httpx.post(webhook_url, json={"text": text}, timeout=10.0)
    except httpx.HTTPError as error:
        reason = type(error).__name__
        raise AlertError(f"the alert webhook could not be reached ({reason})") from None
    if response.status_code >= 400:
        raise AlertError(f"the alert webhook answered {response.status_code}")
