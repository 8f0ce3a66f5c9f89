"""Run the production path on Airflow's embedded SQLite default and show what a receiver got.

A fresh Airflow home is made under demo-output/; the api-server, scheduler, dag-processor,
triggerer and the flow webhook dispatcher start on 127.0.0.1 (each its own process, the
same harness the tests use), the example DAGs in dags/ are triggered through the REST API,
and their webhooks go to a receiver on 127.0.0.1 that checks every signature. It prints
each message, whether its signature verifies, and each run's Webhooks tab; then it stops
everything it started, unless ``--keep-running`` asks it to leave them up for you.

Exit status 0 means every expected message arrived signed.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import shutil
import sys
import time
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from airflow_webhook_provider.receiver import ReceivedRequest, RecordingReceiver  # noqa: E402
from tests.airflow_deployment import AirflowDeployment, free_loopback_port  # noqa: E402

OUTPUT = REPO / "demo-output"
SECRET = "demo-secret-change-me"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer", "dispatcher")

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


def _port() -> int:
    """8080 when it is free (the usual Airflow port), else any free loopback port."""
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 8080))
        except OSError:
            return free_loopback_port()
    return 8080


def main() -> int:
    """Run the demo; return the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave Airflow and the receiver up until Ctrl-C, to click through",
    )
    args = parser.parse_args()
    shutil.rmtree(OUTPUT, ignore_errors=True)
    OUTPUT.mkdir(parents=True)
    failures = 0
    with RecordingReceiver(secret=SECRET) as receiver:
        connections = {
            f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(
                {
                    "conn_type": "flow_webhook",
                    "host": receiver.url(f"/{conn_id}"),
                    "password": SECRET,
                    "extra": extra,
                }
            )
            for conn_id, extra, _ in EXAMPLES.values()
        }
        with AirflowDeployment(OUTPUT, REPO / "dags", extra_env=connections, port=_port()) as airflow:
            print(f"Airflow home: {airflow.home} (SQLite, LocalExecutor); receiver on {receiver.url()}")
            started = time.monotonic()
            airflow.start(*COMPONENTS)
            print(
                f"Started {', '.join(COMPONENTS)} in {time.monotonic() - started:.0f} s; UI at {airflow.api_url}"
            )
            status = json.loads(airflow.provider_cli("status", "-o", "json").stdout)
            print(f"Delivery mode: {status['mode_detail']}\n")

            runs = {}
            for dag_id in EXAMPLES:
                airflow.wait_for_dag(dag_id, timeout=240)
                runs[dag_id] = airflow.trigger(dag_id)
            for dag_id, (_, _, expected) in EXAMPLES.items():
                run_id = runs[dag_id]
                state = airflow.wait_for_run(dag_id, run_id, timeout=300)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    got = [r for r in receiver.requests if f"/{EXAMPLES[dag_id][0]}" in r.target]
                    if len(got) >= expected:
                        break
                    time.sleep(0.5)
                print(f"== {dag_id}: run {run_id} ended {state}")
                for request in got:
                    verified = request.signature_valid and independent_check(request)
                    failures += not verified
                    print(f"   {request.method} {request.target}")
                    print(f"   X-Webhook-Id: {request.delivery_id}")
                    print(f"   X-Webhook-Signature: {request.header('X-Webhook-Signature')}")
                    if request.body:
                        print(f"   body: {request.body.decode()}")
                    print(
                        f"   signature verifies: {'yes' if verified else 'NO: ' + str(request.signature_error)}"
                    )
                if len(got) != expected:
                    failures += 1
                    print(f"   expected {expected} message(s), received {len(got)}")
                print(
                    f"   Webhooks tab: {airflow.api_url}/dags/{dag_id}/runs/{quote(run_id, safe='')}/plugin/webhooks\n"
                )
            listing = json.loads(airflow.provider_cli("deliveries", "list", "-o", "json").stdout)
            sent_by = sorted({row["capture"] for row in listing})
            print(
                f"Ledger: {len(listing)} message(s), captured by {', '.join(sent_by)}; states: "
                f"{sorted({row['state'] for row in listing})}"
            )
            total = len(receiver.requests)
            print(
                f"{total} message(s) received, {total - failures if failures <= total else 0} verified, "
                f"{failures} problem(s)."
            )
            if args.keep_running:
                print(
                    f"\nLeft running: log in at {airflow.api_url} as admin / {airflow.passwords['admin']}; "
                    "Ctrl-C stops everything."
                )
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    print("\nStopping...")
    print("Stopped everything the demo started.")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
