"""Announcing a failed run to a webhook (Slack-compatible JSON: `{"text": ...}`).

The URL is a secret in most chat tools, so no message here ever repeats it.
"""

import httpx

ALERT_TIMEOUT_S = 10.0
MAX_TEXT = 1500


class AlertError(Exception):
    """The webhook could not be reached or refused the message."""


def post_alert(webhook_url: str, text: str) -> None:
    """Post one short message; raise AlertError with a reason that omits the URL."""
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - 1] + "…"
    try:
        response = httpx.post(webhook_url, json={"text": text}, timeout=ALERT_TIMEOUT_S)
    except httpx.HTTPError as error:
        raise AlertError(
            f"the alert webhook could not be reached ({type(error).__name__})"
        ) from None
    if response.status_code >= 400:
        raise AlertError(f"the alert webhook answered {response.status_code}")
