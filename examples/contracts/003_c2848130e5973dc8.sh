#!/usr/bin/env bash
# Seed 003: the customer registers its callback URL; the provider publishes a finished synthesis.
# Run against `herald serve --config 003_c2848130e5973dc8.toml`.
source "$(dirname "$0")/common.sh"
new_account "Seed 003 customer"
call PUT /v1/me/callback-url "$API_KEY" "{\"callback_url\": \"$RECEIVER\"}"
echo
call POST /v1/events "$HERALD_ADMIN_TOKEN" "{\"account\": \"$ACCOUNT_ID\", \"type\": \"speak.done\", \"data\": {
  \"speak_url\": \"https://typecast.ai/api/speak/5d47ff94e6c00800075726d3\",
  \"audio_url_no_redirect\": \"https://typecast.ai/files/speak/ZGF0YS9jkwNC53YXY=/no-redirect\",
  \"status\": \"done\", \"kind\": \"/api/speak\",
  \"audio_download_url\": \"https://cdn.typecast.ai/blah_the_audio_file_url_blah\"}}"
echo
