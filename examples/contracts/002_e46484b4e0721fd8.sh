#!/usr/bin/env bash
# Seed 002: a transcription with a webhook_url; the URL gets the finished job, once.
# Run against `herald serve --config 002_e46484b4e0721fd8.toml`.
source "$(dirname "$0")/common.sh"
new_account "Seed 002 customer"
JOB=trs_01HZX9K7Q2M4YV8BTA6JRN3PDE
# The provider creates the job when the customer's POST /v1/transcriptions arrives.
call POST /v1/jobs "$HERALD_ADMIN_TOKEN" "{\"account\": \"$ACCOUNT_ID\", \"kind\": \"transcription\", \"id\": \"$JOB\",
  \"input\": {\"source\": {\"type\": \"youtube\", \"url\": \"https://youtu.be/dQw4w9WgXcQ\"}},
  \"webhook_url\": \"$RECEIVER\"}"
echo
call PATCH "/v1/jobs/$JOB" "$HERALD_ADMIN_TOKEN" '{"status": "processing", "progress": 0.5}'
echo
call PATCH "/v1/jobs/$JOB" "$HERALD_ADMIN_TOKEN" '{"status": "completed",
  "result": {"text": "Welcome back to the channel.", "duration_seconds": 842, "points_spent": 14,
             "subtitles": {"vtt": "https://storage.quillhub.ai/subtitles/x.vtt"}}}'
echo
