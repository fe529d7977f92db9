//! Certificates made in the tests (rcgen) and a TLS client (tokio-rustls)
//! that reports which certificate the balancer presented.
//!
//! A [`TestCa`] signs leaf certificates written as PEM files into a
//! directory the test owns; [`connect`] opens a TLS connection with or
//! without SNI, either verifying against the CA or accepting anything (to
//! see the default certificate served for an unknown or absent name).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::WAIT;

/// A certificate authority for one test.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf certificate written to disk.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The certificate as the balancer should present it.
    pub der: Vec<u8>,
}

impl Leaf {
    /// `{ cert_file: ..., key_file: ... }` as flow YAML.
    pub fn yaml(&self) -> String {
        format!(
            "{{ cert_file: \"{}\", key_file: \"{}\" }}",
            self.cert_file.display(),
            self.key_file.display()
        )
    }
}

impl TestCa {
    /// # Panics
    ///
    /// If rcgen cannot make the key or certificate.
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|e| panic!("ca params: {e}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "switchyard test CA");
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("ca key: {e}"));
        let cert = params
            .self_signed(&key)
            .unwrap_or_else(|e| panic!("ca certificate: {e}"));
        TestCa { cert, key }
    }

    /// Issues a certificate for `names` (DNS names, `*.x` wildcards
    /// allowed) and writes `<stem>.pem` and `<stem>.key` into `dir`
    /// (overwriting: a renewal).
    ///
    /// # Panics
    ///
    /// If rcgen fails or the files cannot be written.
    pub fn issue(&self, dir: &Path, stem: &str, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("leaf key: {e}"));
        let cert = CertificateParams::new(names)
            .unwrap_or_else(|e| panic!("leaf params: {e}"))
            .signed_by(&key, &self.cert, &self.key)
            .unwrap_or_else(|e| panic!("leaf certificate: {e}"));
        let leaf = Leaf {
            cert_file: dir.join(format!("{stem}.pem")),
            key_file: dir.join(format!("{stem}.key")),
            der: cert.der().to_vec(),
        };
        write(&leaf.cert_file, &cert.pem());
        write(&leaf.key_file, &key.serialize_pem());
        leaf
    }

    /// The CA certificate, to trust.
    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestCa")
    }
}

impl Default for TestCa {
    fn default() -> TestCa {
        TestCa::new()
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How the client checks the server's certificate.
#[derive(Debug, Clone, Copy)]
pub enum Verify<'a> {
    /// Against this CA, for the SNI name: a real client.
    Ca(&'a TestCa),
    /// Accept any certificate (to see what is served for odd names).
    Anything,
}

/// Accepts any certificate; still checks the handshake signatures.
#[derive(Debug)]
struct AcceptAnything(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client config: SNI `sni` (none when `None`), ALPN `alpn`.
///
/// # Panics
///
/// If rustls refuses the config (a bug in the test).
pub fn client_config(sni: Option<&str>, verify: Verify<'_>, alpn: &[&str]) -> ClientConfig {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("protocol versions: {e}"));
    let mut config = match verify {
        Verify::Ca(ca) => {
            let mut roots = RootCertStore::empty();
            roots
                .add(ca.der())
                .unwrap_or_else(|e| panic!("trust the test CA: {e}"));
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Verify::Anything => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider())))
            .with_no_client_auth(),
    };
    config.enable_sni = sni.is_some();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config
}

/// Opens a TLS connection to `addr` with SNI `sni` (none when `None`).
/// `Err` with the reason when the connection or handshake fails.
pub async fn connect(
    addr: SocketAddr,
    sni: Option<&str>,
    verify: Verify<'_>,
) -> Result<TlsStream<TcpStream>, String> {
    let config = client_config(sni, verify, &[]);
    // Without SNI the name is only used for verification (not sent).
    let name = ServerName::try_from(sni.unwrap_or("default.invalid").to_owned())
        .map_err(|e| format!("bad server name: {e}"))?;
    let tcp = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connect {addr}: timed out"))?
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    tokio::time::timeout(
        WAIT,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| "tls handshake timed out".to_owned())?
    .map_err(|e| format!("tls handshake: {e}"))
}

/// The end-entity certificate the server presented on `stream`.
pub fn peer_der(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
}

/// Connects with SNI `sni` accepting any certificate and returns the one
/// presented.
///
/// # Panics
///
/// If the handshake fails or no certificate came.
pub async fn served_cert(addr: SocketAddr, sni: Option<&str>) -> Vec<u8> {
    let stream = connect(addr, sni, Verify::Anything)
        .await
        .unwrap_or_else(|e| panic!("sni {sni:?}: {e}"));
    peer_der(&stream).unwrap_or_else(|| panic!("sni {sni:?}: no certificate"))
}
