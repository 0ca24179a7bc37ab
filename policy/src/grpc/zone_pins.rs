//! Which certificates are the zones: the SHA-256 of each zone's current client certificate, by CN.
//!
//! The zones' CA also issues hospitals' certificates, and a certificate it issued once stays valid until it
//! expires. Checking the CN alone (`tokumei-core`, `tokumei-release`) would admit any certificate the CA ever
//! issued with that name — the release zone's old certificate after its host was compromised and a new one was
//! issued, say. With pins (`pki/zone-pins.json`, written by `tokumei pki init`), only the listed certificates are
//! the zone: replacing a zone's certificate and its pin revokes the old one at the policy service's next start.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{PolicyError, Result};

/// The pinned certificates, by the zone's CN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZonePins(BTreeMap<String, BTreeSet<String>>);

impl ZonePins {
    /// Reads `{"tokumei-core": ["<sha256 hex>", ...], "tokumei-release": [...]}`.
    pub fn load(path: &Path) -> Result<ZonePins> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PolicyError::Invalid(format!("cannot read the zone pins {}: {e}", path.display())))?;
        ZonePins::parse(&text).map_err(|why| PolicyError::Invalid(format!("{}: {why}", path.display())))
    }

    /// The pins in their JSON form; every pin 64 hex digits (case and `:` ignored).
    pub fn parse(text: &str) -> std::result::Result<ZonePins, String> {
        let raw: BTreeMap<String, Vec<String>> =
            serde_json::from_str(text).map_err(|_| "not a JSON object of CN → list of SHA-256".to_owned())?;
        let mut pins = BTreeMap::new();
        for (cn, list) in raw {
            let mut set = BTreeSet::new();
            for pin in list {
                let pin = pin.replace(':', "").to_ascii_lowercase();
                if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!("a pin of {cn} is not 64 hex digits"));
                }
                set.insert(pin);
            }
            pins.insert(cn, set);
        }
        Ok(ZonePins(pins))
    }

    /// Whether the certificate `der` is one of zone `cn`'s.
    pub fn admits(&self, cn: &str, der: &[u8]) -> bool {
        let fingerprint = hex::encode(Sha256::digest(der));
        self.0.get(cn).is_some_and(|set| set.contains(&fingerprint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pinned_certificates_are_the_zone() {
        let der = b"a certificate".as_slice();
        let pin = hex::encode(Sha256::digest(der)).to_ascii_uppercase();
        let pins = ZonePins::parse(&format!(r#"{{"tokumei-release": ["{pin}"]}}"#)).unwrap();
        assert!(pins.admits("tokumei-release", der));
        assert!(!pins.admits("tokumei-core", der), "pinned for another zone");
        assert!(!pins.admits("tokumei-release", b"another certificate"));
        assert!(ZonePins::parse(r#"{"tokumei-core": ["abc"]}"#).is_err());
        assert!(ZonePins::parse("[]").is_err());
    }
}
