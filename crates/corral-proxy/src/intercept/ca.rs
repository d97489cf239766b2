//! The certificate authority that signs the proxy's leaf certificates: minted per
//! `corral run` session (its key lives only in the supervisor's memory), or loaded from
//! files for `corral proxy`.

use anyhow::{anyhow, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA certificate and the key that signs leaves with it.
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    /// One key for every leaf: a leaf costs a signature, not a key generation.
    leaf_key: KeyPair,
}

impl std::fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertAuthority")
    }
}

/// A leaf certificate chain and its key, ready for rustls.
pub struct Leaf {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl CertAuthority {
    /// A new CA named `name`, with a fresh key.
    pub fn mint(name: &str) -> anyhow::Result<CertAuthority> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "corral");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().context("generating the CA key")?;
        let cert = params.self_signed(&key).context("signing the CA")?;
        Self::with(Issuer::new(params, key), cert.der().clone(), cert.pem())
    }

    /// The CA in `cert_pem` with its key `key_pem` (PKCS#8, SEC1 or PKCS#1 PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> anyhow::Result<CertAuthority> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| anyhow!("the CA key is not a PEM private key rcgen can use: {e}"))?;
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| anyhow!("the CA certificate is not PEM: {e}"))?;
        let issuer = Issuer::from_ca_cert_der(&der, key)
            .map_err(|e| anyhow!("the CA certificate cannot be parsed: {e}"))?;
        Self::with(issuer, der, cert_pem.to_string())
    }

    fn with(
        issuer: Issuer<'static, KeyPair>,
        cert_der: CertificateDer<'static>,
        cert_pem: String,
    ) -> anyhow::Result<CertAuthority> {
        Ok(CertAuthority {
            issuer,
            cert_der,
            cert_pem,
            leaf_key: KeyPair::generate().context("generating the leaf key")?,
        })
    }

    /// The CA certificate (PEM), for the sandbox's trust bundle.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for `host` (a DNS name or an IP literal), signed by this CA.
    pub fn leaf(&self, host: &str) -> anyhow::Result<Leaf> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let host = host.trim_end_matches('.');
        params.subject_alt_names = vec![match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.try_into()
                    .map_err(|e| anyhow!("{host:?} is not a DNS name: {e}"))?,
            ),
        }];
        params.distinguished_name.push(DnType::CommonName, host);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Valid from a day ago (clock skew) for thirty days: longer than any session.
        let today = days_since_epoch();
        let (y, m, d) = civil(today - 1);
        params.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = civil(today + 30);
        params.not_after = rcgen::date_time_ymd(y, m, d);
        let cert = params.signed_by(&self.leaf_key, &self.issuer)?;
        Ok(Leaf {
            chain: vec![cert.der().clone(), self.cert_der.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der())),
        })
    }
}

fn days_since_epoch() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (secs / 86_400) as i64
}

/// The civil date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_ca_signs_leaves_and_round_trips_through_pem() {
        let ca = CertAuthority::mint("corral test").unwrap();
        let leaf = ca.leaf("api.example.test").unwrap();
        assert_eq!(leaf.chain.len(), 2);
        assert!(ca.leaf("127.0.0.1").is_ok());
        let key = ca.issuer.key().serialize_pem();
        let again = CertAuthority::from_pem(ca.cert_pem(), &key).unwrap();
        assert!(again.leaf("x.test").is_ok());
        assert!(CertAuthority::from_pem("junk", &key).is_err());
        assert!(CertAuthority::from_pem(ca.cert_pem(), "junk").is_err());
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_782), (2024, 2, 29));
        assert_eq!(civil(20_423), (2025, 12, 1));
    }
}
