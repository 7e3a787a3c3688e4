"""Verifies Herald's ed25519 deliveries (Standard Webhooks `v1a`) with the `cryptography` package.

Reads a JSON list of {"public_key": "whpk_…", "body", "headers"} on stdin. At least one `v1a`
signature in each webhook-signature header must verify over "{id}.{timestamp}.{body}", and none
once the body is altered. Prints a count and exits 0, or names the first failure.
"""
import base64
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def verifies(key, headers, body):
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.{body}".encode()
    for entry in headers["webhook-signature"].split(" "):
        version, _, sig = entry.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(sig), content)
            return True
        except InvalidSignature:
            pass
    return False


cases = json.load(sys.stdin)
for i, case in enumerate(cases):
    raw = base64.b64decode(case["public_key"].removeprefix("whpk_"))
    key = Ed25519PublicKey.from_public_bytes(raw)
    if not verifies(key, case["headers"], case["body"]):
        sys.exit(f"case {i}: no v1a signature verifies")
    if verifies(key, case["headers"], case["body"] + " "):
        sys.exit(f"case {i}: an altered body still verified")
print(f"{len(cases)} deliveries verified")
