//! Real TLS material for tests: a private CA and leaf certificates for loopback servers with
//! real-looking names (`gateway.test`, `mirror.corp.example`, `127.0.0.1`…).
//!
//! Everything is written to files as well, because the clients under test (curl, git,
//! python, node, Claude Code) read their trust anchors from files named in their environment.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A private certificate authority living in a temporary directory.
pub struct TestCa {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    ca_path: PathBuf,
}

/// A leaf certificate and its key, signed by a [`TestCa`], as PEM strings and files.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl TestCa {
    /// A new CA. Its files are readable by every user (tests run clients as ordinary users).
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "corral test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("generate CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        let cert_pem = cert.pem();
        let dir = crate::fs::world_readable_tempdir();
        let ca_path = dir.path().join("ca.pem");
        crate::fs::write_readable(&ca_path, cert_pem.as_bytes());
        TestCa {
            dir,
            issuer: Issuer::new(params, key),
            cert_pem,
            ca_path,
        }
    }

    /// The CA certificate as PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Path of the CA certificate file (for `SSL_CERT_FILE`, `GIT_SSL_CAINFO`, `--ca-file`…).
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// Writes the CA's private key (PEM) next to its certificate and returns its path, for
    /// programs that sign with this CA (`corral proxy --ca-key`).
    pub fn key_path(&self) -> PathBuf {
        let path = self.dir.path().join("ca.key");
        crate::fs::write_readable(&path, self.issuer.key().serialize_pem().as_bytes());
        path
    }

    /// A server certificate for `names` (DNS names or IP literals).
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list");
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*name).try_into().expect("valid DNS name")),
            })
            .collect();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("generate leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let stem = names
            .first()
            .copied()
            .unwrap_or("leaf")
            .replace(['*', ':'], "_");
        let cert_path = self.dir.path().join(format!("{stem}.crt"));
        let key_path = self.dir.path().join(format!("{stem}.key"));
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        crate::fs::write_readable(&cert_path, cert_pem.as_bytes());
        crate::fs::write_readable(&key_path, key_pem.as_bytes());
        Leaf {
            cert_pem,
            key_pem,
            cert_path,
            key_path,
        }
    }

    /// A rustls client configuration trusting only this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.cert_pem.as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("add CA");
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl Leaf {
    /// A rustls server configuration presenting this certificate (ALPN `http/1.1`).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .expect("leaf PEM");
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key PEM");
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
