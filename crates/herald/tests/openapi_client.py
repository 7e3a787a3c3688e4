"""Drives Herald through a client generated from its OpenAPI document by openapi-python-client
(tests/it/openapi.rs generates it, unedited, into a folder on PYTHONPATH): creates an account,
a webhook to RECEIVER_URL, publishes an event and waits until its delivery has succeeded.
Prints what it saw as JSON; exits non-zero on anything unexpected."""

import json
import os
import sys
import time

from herald_client import AuthenticatedClient
from herald_client.api.accounts import create_account
from herald_client.api.deliveries import get_delivery, list_deliveries
from herald_client.api.events import publish_event
from herald_client.api.webhooks import create_webhook
from herald_client.models import CreateAccount, CreateWebhook, PublishBody

base = os.environ["HERALD_URL"]
admin = AuthenticatedClient(base_url=base, token=os.environ["HERALD_ADMIN_TOKEN"])

account = create_account.sync(client=admin, body=CreateAccount(name="Generated client"))
assert account is not None and account.api_key.startswith("hk_"), account
customer = AuthenticatedClient(base_url=base, token=account.api_key)

webhook = create_webhook.sync(
    client=customer,
    body=CreateWebhook(url=os.environ["RECEIVER_URL"], events=["tts.*"]),
)
assert webhook is not None and webhook.id.startswith("wh_"), webhook

data = {"id": "tts-123", "audio_url": "https://cdn.example.com/tts-123.mp3", "duration": 2.5}
published = publish_event.sync(
    client=admin,
    body=PublishBody(account=account.id, type_="tts.completed", data=data),
)
assert published is not None and published.deliveries == 1, published

page = list_deliveries.sync(client=customer, event=published.id)
assert page is not None and len(page.data) == 1, page
delivery_id = page.data[0].id

deadline = time.monotonic() + 20
while True:
    delivery = get_delivery.sync(client=customer, id=delivery_id)
    assert delivery is not None, delivery_id
    if delivery.status.value == "succeeded":
        break
    if time.monotonic() > deadline:
        sys.exit(f"delivery {delivery_id} is still {delivery.status.value}")
    time.sleep(0.05)

print(
    json.dumps(
        {
            "account": account.id,
            "webhook": webhook.id,
            "event": published.id,
            "delivery": delivery.id,
            "status": delivery.status.value,
            "attempts": len(delivery.attempts),
            "data": data,
        }
    )
)
