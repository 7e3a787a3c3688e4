#!/usr/bin/env bash
# Seed 001: the customer's one URL gets every status of its jobs, authenticated by its API key.
# Run against `herald serve --config 001_3f4a436ce5f861c8.toml`.
source "$(dirname "$0")/common.sh"
new_account "Seed 001 customer"
# The dashboard's "register webhook": the newer API sends `Authorization: Bearer <API key>`.
# (The older API's `secret-key: <API key>` is {"mode": "header", "name": "secret-key", "value": …}.)
call PUT /v1/me/callback-url "$API_KEY" "{\"callback_url\": \"$RECEIVER\",
  \"signing\": {\"mode\": \"bearer\", \"token\": \"$API_KEY\"}}"
echo
publish() {
  call POST /v1/events "$HERALD_ADMIN_TOKEN" "{\"account\": \"$ACCOUNT_ID\", \"type\": \"$1\", \"data\": $2}"
  echo
}
publish tts.queued '{"version": "2", "id": "3nxzD2szLZGQW7PXWn", "status": "queued", "progress": 0}'
publish tts.complete '{"version": "2", "id": "3nxzD2szLZGQW7PXWn", "status": "complete", "progress": 1,
  "url": "https://peregrine-results.s3.amazonaws.com/pigeon/3nxzD2szLZGQW7PXWn_0.mp3", "duration": 1.344, "size": 28365}'
