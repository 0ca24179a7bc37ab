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
  capabilities = ["read", "update"]
}
# Rotation (`tokumei store rotate-keys`); drop this for the running core and keep it for the operator token.
path "transit/keys/tokumei-store-kek/rotate" {
  capabilities = ["update"]
}

# No release key at all: a build's core half seals its package to the release zone's intake key (HPKE, a public
# key pinned in the core's configuration); the release zone makes and wraps every release's keys itself.

# Single-host deployments only (`[core] source = "local"`: the core reads the gateway's spool directory and needs
# its sealing key). Across hosts the gateway serves the spool and this stays commented out.
# path "transit/decrypt/tokumei-gateway-kek" {
#   capabilities = ["update"]
# }

path "transit/export/*" {
  capabilities = ["deny"]
}
path "transit/backup/*" {
  capabilities = ["deny"]
}
