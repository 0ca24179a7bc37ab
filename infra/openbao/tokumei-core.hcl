# Policy for the core store's OpenBao token: wrap and unwrap the store's data keys under the derived,
# non-exportable transit key `tokumei-store-kek`, re-wrap them after rotation. No HMAC keys: the core never
# computes pseudonyms, so a compromised core cannot link new identities.

path "transit/encrypt/tokumei-store-kek" {
  capabilities = ["update"]
}
path "transit/decrypt/tokumei-store-kek" {
  capabilities = ["update"]
}
path "transit/rewrap/tokumei-store-kek" {
  capabilities = ["update"]
}
path "transit/keys/tokumei-store-kek" {
  capabilities = ["read", "create", "update"]
}
# Rotation (`tokumei store rotate-keys`); drop this for the running core and keep it for the operator token.
path "transit/keys/tokumei-store-kek/rotate" {
  capabilities = ["update"]
}

path "transit/export/*" {
  capabilities = ["deny"]
}
path "transit/backup/*" {
  capabilities = ["deny"]
}
