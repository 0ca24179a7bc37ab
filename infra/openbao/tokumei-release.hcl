# Policy for the release zone's OpenBao token: unwrap the keys that seal releases and draw their fingerprints,
# under the zone's own KEK `tokumei-release-kek`. Nothing on the store's KEK (the release zone faces researchers:
# its credentials must not open the core) and no HMAC keys.

path "transit/encrypt/tokumei-release-kek" {
  capabilities = ["update"]
}
path "transit/decrypt/tokumei-release-kek" {
  capabilities = ["update"]
}
path "transit/rewrap/tokumei-release-kek" {
  capabilities = ["update"]
}
path "transit/keys/tokumei-release-kek" {
  capabilities = ["read", "update"]
}
path "transit/keys/tokumei-release-kek/rotate" {
  capabilities = ["update"]
}

path "transit/export/*" {
  capabilities = ["deny"]
}
path "transit/backup/*" {
  capabilities = ["deny"]
}
