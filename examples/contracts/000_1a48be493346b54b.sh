#!/usr/bin/env bash
# Seed 000: the customer subscribes a URL to some events with its own secret; the provider
# publishes tts.completed. Run against `herald serve --config 000_1a48be493346b54b.toml`.
source "$(dirname "$0")/common.sh"
new_account "Seed 000 customer"
# POST /webhooks {url, events, secret} → {id, url, events, status: "active", created_at, …}
call POST /v1/webhooks "$API_KEY" "{\"url\": \"$RECEIVER\", \"events\": [\"tts.completed\", \"stt.completed\"],
  \"secret\": \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"}"
echo
# The provider: a TTS job finished.
call POST /v1/events "$HERALD_ADMIN_TOKEN" "{\"account\": \"$ACCOUNT_ID\", \"type\": \"tts.completed\",
  \"data\": {\"id\": \"tts-123\", \"text\": \"Hello, world!\", \"voice_id\": \"default-voice\",
             \"audio_url\": \"https://cdn.60db.com/audio/tts-123.mp3\", \"duration\": 2.5}}"
echo
