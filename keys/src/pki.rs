//! Development PKI (`tokumei pki init --hospitals N`): a CA, the gateway's server certificate, one client
//! certificate per hospital (CN = 10-digit medical-institution code) and one for the core store.
//!
//! Production deployments bring their own CA and point the configuration at PEM files; this exists so that
//! the demo and the tests run the real mutual-TLS path on loopback. Private keys are written with mode 0600.

use crate::local::write_private;
use chrono::Datelike;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};

/// PKI generation errors.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A hospital code is not a 10-digit medical-institution code.
    #[error("{0} is not a 10-digit medical-institution code")]
    BadCode(String),
}

/// Paths of the files a PKI directory holds.
#[derive(Debug, Clone)]
pub struct PkiLayout {
    /// The directory.
    pub dir: PathBuf,
}

impl PkiLayout {
    /// The layout rooted at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PkiLayout { dir: dir.into() }
    }
    /// CA certificate (what clients and the gateway trust).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// CA private key.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    /// Gateway server certificate.
    pub fn gateway_cert(&self) -> PathBuf {
        self.dir.join("gateway.crt")
    }
    /// Gateway server key.
    pub fn gateway_key(&self) -> PathBuf {
        self.dir.join("gateway.key")
    }
    /// Core store client certificate.
    pub fn core_cert(&self) -> PathBuf {
        self.dir.join("core.crt")
    }
    /// Core store client key.
    pub fn core_key(&self) -> PathBuf {
        self.dir.join("core.key")
    }

    /// The release zone's client certificate (CN `tokumei-release`): how it asks the policy service for decisions.
    pub fn release_cert(&self) -> PathBuf {
        self.dir.join("release-zone.crt")
    }

    /// The release zone's client key.
    pub fn release_key(&self) -> PathBuf {
        self.dir.join("release-zone.key")
    }

    /// The zones' certificates the policy service admits, by CN, as SHA-256 of their DER (written by [`init`]):
    /// a certificate the CA issued with a zone's CN but not listed here — one replaced after a compromise, say —
    /// is refused.
    pub fn zone_pins(&self) -> PathBuf {
        self.dir.join("zone-pins.json")
    }
    /// A hospital's client certificate.
    pub fn hospital_cert(&self, code: &str) -> PathBuf {
        self.dir.join("hospitals").join(format!("{code}.crt"))
    }
    /// A hospital's client key.
    pub fn hospital_key(&self, code: &str) -> PathBuf {
        self.dir.join("hospitals").join(format!("{code}.key"))
    }
}

/// SHA-256 (hex) of the DER of the first certificate in the PEM file at `path`.
pub fn certificate_sha256(path: &Path) -> Result<String, PkiError> {
    let io = |source| PkiError::Io {
        path: path.display().to_string(),
        source,
    };
    let pem = std::fs::read(path).map_err(io)?;
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .ok_or_else(|| io(std::io::Error::other("no certificate in the file")))?
        .map_err(io)?;
    Ok(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(der.as_ref())))
}

/// Writes the pins of the zones' current certificates (`zone-pins.json`): only these are the zones.
fn write_zone_pins(layout: &PkiLayout) -> Result<(), PkiError> {
    let pins = serde_json::json!({
        "tokumei-core": [certificate_sha256(&layout.core_cert())?],
        "tokumei-release": [certificate_sha256(&layout.release_cert())?],
    });
    write_public(&layout.zone_pins(), &format!("{pins:#}\n"))
}

fn write_public(path: &Path, text: &str) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(path, text).map_err(io)
}

fn write_secret(path: &Path, text: &str) -> Result<(), PkiError> {
    write_private(path, text.as_bytes()).map_err(|source| PkiError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn validity(params: &mut CertificateParams, years: i32) {
    let now = chrono::Utc::now();
    params.not_before = rcgen::date_time_ymd(now.year() - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(now.year() + years, 12, 31);
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "tokumei development");
    dn.push(DnType::CommonName, "tokumei development CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut p, 10);
    p
}

fn leaf(cn: &str, sans: Vec<SanType>, usage: ExtendedKeyUsagePurpose) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "tokumei development");
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.subject_alt_names = sans;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![usage];
    validity(&mut p, 2);
    p
}

fn issue(
    layout_cert: &Path,
    layout_key: &Path,
    params: CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(), PkiError> {
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    write_public(layout_cert, &cert.pem())?;
    write_secret(layout_key, &key.serialize_pem())
}

/// What `init` created or found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PkiSummary {
    /// The PKI directory.
    pub dir: String,
    /// Whether a new CA was created (false when one existed).
    pub created_ca: bool,
    /// Hospital codes that have certificates now.
    pub hospitals: Vec<String>,
    /// Hospital codes issued by this call.
    pub issued: Vec<String>,
}

/// Creates the CA, gateway and core certificates if missing, and a certificate for every listed hospital
/// that has none. Existing files are kept, so running it again only adds what is missing.
pub fn init(layout: &PkiLayout, hospital_codes: &[String], gateway_names: &[String]) -> Result<PkiSummary, PkiError> {
    for c in hospital_codes {
        if !tokumei_platform::tls::is_institution_code(c) {
            return Err(PkiError::BadCode(c.clone()));
        }
    }
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |source| PkiError::Io { path: p, source }
    };
    let created_ca = !layout.ca_cert().exists() || !layout.ca_key().exists();
    let ca_key = if created_ca {
        let key = KeyPair::generate()?;
        let cert = ca_params().self_signed(&key)?;
        write_public(&layout.ca_cert(), &cert.pem())?;
        write_secret(&layout.ca_key(), &key.serialize_pem())?;
        key
    } else {
        let pem = std::fs::read_to_string(layout.ca_key()).map_err(io(&layout.ca_key()))?;
        KeyPair::from_pem(&pem)?
    };
    // The CA's subject and key usages are fixed by `ca_params`, so rebuilding them reproduces the issuer.
    let issuer = Issuer::new(ca_params(), ca_key);
    if created_ca || !layout.gateway_cert().exists() {
        let mut sans = vec![SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]))];
        for n in gateway_names {
            match n.parse::<std::net::IpAddr>() {
                Ok(ip) => sans.push(SanType::IpAddress(ip)),
                Err(_) => sans.push(SanType::DnsName(n.clone().try_into()?)),
            }
        }
        let params = leaf("tokumei gateway", sans, ExtendedKeyUsagePurpose::ServerAuth);
        issue(&layout.gateway_cert(), &layout.gateway_key(), params, &issuer)?;
    }
    if created_ca || !layout.core_cert().exists() {
        let params = leaf("tokumei-core", vec![], ExtendedKeyUsagePurpose::ClientAuth);
        issue(&layout.core_cert(), &layout.core_key(), params, &issuer)?;
    }
    if created_ca || !layout.release_cert().exists() {
        let params = leaf("tokumei-release", vec![], ExtendedKeyUsagePurpose::ClientAuth);
        issue(&layout.release_cert(), &layout.release_key(), params, &issuer)?;
    }
    write_zone_pins(layout)?;
    let mut issued = Vec::new();
    for code in hospital_codes {
        if created_ca || !layout.hospital_cert(code).exists() {
            let params = leaf(code, vec![], ExtendedKeyUsagePurpose::ClientAuth);
            issue(&layout.hospital_cert(code), &layout.hospital_key(code), params, &issuer)?;
            issued.push(code.clone());
        }
    }
    let mut hospitals = Vec::new();
    if let Ok(rd) = std::fs::read_dir(layout.dir.join("hospitals")) {
        for e in rd.flatten() {
            if let Some(code) = e.file_name().to_string_lossy().strip_suffix(".crt") {
                hospitals.push(code.to_string());
            }
        }
    }
    hospitals.sort();
    Ok(PkiSummary {
        dir: layout.dir.display().to_string(),
        created_ca,
        hospitals,
        issued,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_idempotent_and_adds_hospitals() {
        let dir = tempfile::tempdir().unwrap();
        let layout = PkiLayout::new(dir.path());
        let s1 = init(&layout, &["1311234567".into()], &["localhost".into()]).unwrap();
        assert!(s1.created_ca);
        let ca1 = std::fs::read(layout.ca_cert()).unwrap();
        let s2 = init(&layout, &["1311234567".into(), "2711234567".into()], &[]).unwrap();
        assert!(!s2.created_ca);
        assert_eq!(s2.issued, vec!["2711234567".to_string()]);
        assert_eq!(std::fs::read(layout.ca_cert()).unwrap(), ca1);
        let der = tokumei_platform::tls::load_certs(&layout.hospital_cert("2711234567")).unwrap();
        assert_eq!(
            tokumei_platform::tls::subject_cn(der[0].as_ref()).as_deref(),
            Some("2711234567")
        );
        assert!(init(&layout, &["12345".into()], &[]).is_err());
    }
}
