# Policy for the gateway's OpenBao token: HMACs under its three pseudonymisation keys, and its own KEK for the
# spool's sealing key. Exact key paths, never a wildcard: `transit/keys/tokumei-*` (the old policy) also matched
# `tokumei-store-kek/config` and `.../rotate`, so the gateway could reconfigure or rotate the store's KEK.
# "update" on `transit/keys/<name>` creates the key (transit has no separate create); its configuration lives at
# `<name>/config`, which no zone token gets. The keys are created non-exportable by the gateway on first start (or
# by an operator beforehand, in which case the "update" capabilities on keys/ can be dropped).

path "transit/hmac/tokumei-linkage/sha2-256" {
  capabilities = ["update"]
}
path "transit/hmac/tokumei-hospital-pseudonym/sha2-256" {
  capabilities = ["update"]
}
path "transit/hmac/tokumei-batch-digest/sha2-256" {
  capabilities = ["update"]
}
path "transit/keys/tokumei-linkage" {
  capabilities = ["read", "update"]
}
path "transit/keys/tokumei-hospital-pseudonym" {
  capabilities = ["read", "update"]
}
path "transit/keys/tokumei-batch-digest" {
  capabilities = ["read", "update"]
}

# The spool's sealing key, wrapped under the gateway's own KEK.
path "transit/encrypt/tokumei-gateway-kek" {
  capabilities = ["update"]
}
path "transit/decrypt/tokumei-gateway-kek" {
  capabilities = ["update"]
}
path "transit/rewrap/tokumei-gateway-kek" {
  capabilities = ["update"]
}
path "transit/keys/tokumei-gateway-kek" {
  capabilities = ["read", "update"]
}

# Explicitly no export, no backup, no raw key access.
path "transit/export/*" {
  capabilities = ["deny"]
}
path "transit/backup/*" {
  capabilities = ["deny"]
}
