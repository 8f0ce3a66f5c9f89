"""Run the example DAGs against a local receiver and show what it received.

A fresh Airflow home (SQLite) is made under demo-output/, the example DAGs in dags/
run with ``airflow dags test``, and their webhooks go to a receiver on 127.0.0.1 that
checks every signature. Exit status 0 means every expected message arrived signed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from airflow_webhook_provider.receiver import ReceivedRequest, RecordingReceiver

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "demo-output"
SECRET = "demo-secret-change-me"

# dag id -> (connection id, connection extras, messages expected)
EXAMPLES = {
    "example_slack_on_failure": ("slack_webhook", {}, 1),
    "example_output_success": ("reports_webhook", {}, 1),
    "example_signed_get_ping": ("ping_webhook", {"method": "GET"}, 1),
}


def independent_check(request: ReceivedRequest) -> bool:
    """Recompute the HMAC with the standard library, as a receiver in any language would."""
    header = request.header("X-Webhook-Signature") or ""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    signed = request.body if request.method in ("POST", "PUT", "PATCH") else request.url.encode()
    expected = hmac.new(
        SECRET.encode(), parts.get("t", "").encode() + b"." + signed, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, parts.get("sha256", ""))


def main() -> int:
    """Run every example and return the process exit status."""
    shutil.rmtree(OUTPUT, ignore_errors=True)
    home = OUTPUT / "airflow-home"
    home.mkdir(parents=True)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__API__BASE_URL": "http://127.0.0.1:8080",
    }
    airflow = [sys.executable, "-m", "airflow"]
    print(f"Airflow home: {home} (SQLite)")
    subprocess.run([*airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)

    failures = 0
    with RecordingReceiver(secret=SECRET) as receiver:
        print(f"Receiver listening on {receiver.url()}\n")
        for dag_id, (conn_id, extra, expected) in EXAMPLES.items():
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
                {
                    "conn_type": "flow_webhook",
                    "host": receiver.url(f"/{conn_id}"),
                    "password": SECRET,
                    "extra": extra,
                }
            )
            before = len(receiver.requests)
            log_path = OUTPUT / f"{dag_id}.log"
            started = time.monotonic()
            with log_path.open("w") as log:
                subprocess.run(
                    [*airflow, "dags", "test", dag_id],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=600,
                )
            receiver.wait_for(before + expected, timeout=30)
            got = receiver.requests[before:]
            print(
                f"== {dag_id}: `airflow dags test` took {time.monotonic() - started:.1f} s (log: {log_path})"
            )
            for request in got:
                verified = request.signature_valid and independent_check(request)
                failures += not verified
                print(f"   {request.method} {request.target}")
                print(f"   X-Webhook-Id: {request.delivery_id}")
                print(f"   X-Webhook-Signature: {request.header('X-Webhook-Signature')}")
                if request.body:
                    print(f"   body: {request.body.decode()}")
                print(
                    f"   signature verifies: {'yes' if verified else 'NO: ' + str(request.signature_error)}\n"
                )
            if len(got) != expected:
                failures += 1
                print(f"   expected {expected} message(s), received {len(got)}\n")
        total = len(receiver.requests)
    verified_count = total - failures if failures <= total else 0
    print(f"{total} message(s) received, {verified_count} verified, {failures} problem(s).")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
