"""Verifies Herald's deliveries with the independent `standardwebhooks` package.

Reads a JSON list of {"secret", "body", "headers"} on stdin. Each must verify, and must stop
verifying once its body is altered. Prints a count and exits 0, or names the first failure.
"""
import json
import sys

from standardwebhooks import Webhook
from standardwebhooks.exceptions import WebhookVerificationError

cases = json.load(sys.stdin)
for i, case in enumerate(cases):
    hook = Webhook(case["secret"])
    payload = hook.verify(case["body"], case["headers"])
    if not isinstance(payload, dict):
        sys.exit(f"case {i}: verified payload is not an object")
    try:
        hook.verify(case["body"] + " ", case["headers"])
        sys.exit(f"case {i}: an altered body still verified")
    except WebhookVerificationError:
        pass
print(f"{len(cases)} deliveries verified")
