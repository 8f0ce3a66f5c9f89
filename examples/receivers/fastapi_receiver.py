"""A flow webhook receiver in FastAPI, verifying with airflow_webhook_provider.core.signing.

    WEBHOOK_SECRET=my-secret uvicorn fastapi_receiver:app --host 127.0.0.1 --port 8000

``signing`` imports nothing from Airflow: ``pip install airflow-webhook-provider`` is
all a receiver needs, or copy signing.py. A ReplayGuard refuses a delivery id seen in the
last five minutes; it remembers an id only once the signature verified, and the
handler here accepts in the same step, so a sender's retry after a failure is still
taken.
"""

from __future__ import annotations

import os

from fastapi import FastAPI, HTTPException, Request

from airflow_webhook_provider.core.signing import InvalidSignature, ReplayGuard, payload_for, verify_signature

app = FastAPI()
guard = ReplayGuard(tolerance_seconds=300)
received: list[dict[str, object]] = []


@app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def webhook(request: Request, path: str) -> dict[str, str]:
    """Verify one flow webhook and keep it."""
    body = await request.body()
    try:
        verify_signature(
            request.headers.get("X-Webhook-Signature"),
            payload_for(request.method, body=body, url=str(request.url)),
            os.environ["WEBHOOK_SECRET"],
            replay_guard=guard,
            delivery_id=request.headers.get("X-Webhook-Id"),
        )
    except InvalidSignature as exc:
        raise HTTPException(status_code=401, detail=str(exc)) from None
    received.append({"id": request.headers["X-Webhook-Id"], "body": body.decode()})
    return {"status": "accepted"}
