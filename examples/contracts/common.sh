# Shared by the contract scripts: where Herald and the receiver are, and a curl that fails loudly.
# HERALD: Herald's base URL. RECEIVER: the customer's endpoint. HERALD_ADMIN_TOKEN: the operator's token.
set -euo pipefail
HERALD=${HERALD:-http://localhost:8080}
RECEIVER=${RECEIVER:-http://127.0.0.1:9000/webhooks}
: "${HERALD_ADMIN_TOKEN:?set HERALD_ADMIN_TOKEN (for a --dev server: cat herald-data/admin-token)}"
call() { # call METHOD PATH TOKEN [JSON]
  curl -sS --fail-with-body -X "$1" "$HERALD$2" -H "Authorization: Bearer $3" \
    -H 'Content-Type: application/json' ${4:+-d "$4"}
}
# The provider makes an account for its customer; the customer's API key comes back once.
new_account() {
  local account
  account=$(call POST /v1/accounts "$HERALD_ADMIN_TOKEN" "{\"name\": \"$1\"}")
  ACCOUNT_ID=$(echo "$account" | jq -r .id)
  API_KEY=$(echo "$account" | jq -r .api_key)
}
