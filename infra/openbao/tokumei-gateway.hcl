# Policy for the gateway's OpenBao token: compute HMACs under tokumei keys, nothing else.
# Keys are created non-exportable by the gateway on first start (or by an operator beforehand, in which case
# the "create" capability on keys/ can be dropped).

path "transit/hmac/tokumei-*" {
  capabilities = ["update"]
}

path "transit/keys/tokumei-*" {
  capabilities = ["read", "create", "update"]
}

# Explicitly no export, no backup, no raw key access.
path "transit/export/*" {
  capabilities = ["deny"]
}
path "transit/backup/*" {
  capabilities = ["deny"]
}
