//! TLS termination for `https` and `tls` listeners: certificates chosen by
//! SNI, one rustls `ServerConfig` per listener.
//!
//! Design choices:
//! - Certificates and keys are read from disk every time [`server_config`]
//!   runs, and `control` runs it on every start and reload: a renewed
//!   certificate takes effect with a reload, no restart. The built configs
//!   are published per listener in a [`TlsStore`] (one `ArcSwap` of a map),
//!   which running listeners read at each accepted connection; listeners
//!   kept across a reload therefore pick up the new certificates without
//!   re-binding.
//! - SNI matching uses webpki's own end-entity name validation (exact and
//!   wildcard names, as a client would check them) instead of parsing SANs
//!   here: the certificate that is served is exactly one the client will
//!   accept for that name. The first pair is the default when the client
//!   sends no SNI or a name no certificate covers.
//! - A key that does not match its certificate is refused when the config
//!   is built (`check`, start and reload), naming both files, rather than
//!   failing handshakes later.
//! - ring is the crypto provider (aws-lc-rs costs minutes of C build);
//!   TLS 1.2 and 1.3 only; stateless session tickets so that resumption
//!   works across connections without a shared cache.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use metrics::Counter;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
/// Re-exported so that callers need no rustls dependency of their own.
pub use rustls::ServerConfig;
use switchyard_config::{
    CertificatePair, Config, ConfigError, Listener, ListenerProtocol, SourceMap, Tls,
};

/// The crypto provider every TLS config uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls server config for one listener's `tls` section:
/// every certificate/key pair loaded now from disk and checked to match,
/// SNI selection with the first pair as default, TLS 1.2 and 1.3, and
/// `alpn` offered in that order (empty: no ALPN).
pub fn server_config(tls: &Tls, alpn: &[String]) -> Result<Arc<ServerConfig>, String> {
    build(tls, alpn).map_err(|(_, e)| e)
}

/// [`server_config`], with the index of the certificate pair at fault.
fn build(tls: &Tls, alpn: &[String]) -> Result<Arc<ServerConfig>, (Option<usize>, String)> {
    let provider = provider();
    let mut certs = Vec::with_capacity(tls.certificates.len());
    for (k, pair) in tls.certificates.iter().enumerate() {
        certs.push(load_pair(pair, &provider).map_err(|e| (Some(k), e))?);
    }
    let fail = |e: String| (None, e);
    if certs.is_empty() {
        return Err(fail("tls has no certificates".into()));
    }
    let resolver = SniResolver { certs };
    let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| fail(format!("tls: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config.ticketer = rustls::crypto::ring::Ticketer::new()
        .map_err(|e| fail(format!("tls: session tickets: {e}")))?;
    Ok(Arc::new(config))
}

/// The ALPN protocols a listener offers: https its configured list
/// (default `[h2, http/1.1]`, filled in by config), tls none.
pub fn alpn_of(listener: &Listener) -> &[String] {
    match (&listener.tls, listener.protocol) {
        (Some(tls), ListenerProtocol::Https) => &tls.alpn,
        _ => &[],
    }
}

/// Server configs by listener name.
pub type TlsConfigs = HashMap<String, Arc<ServerConfig>>;

/// A listener whose TLS config cannot be built: where in the YAML
/// (`listeners.0.tls.certificates.1`) and why.
#[derive(Debug, Clone)]
pub struct TlsProblem {
    pub at: String,
    pub message: String,
}

impl TlsProblem {
    /// As config errors print: `{origin}:{line}:{col}: {message}`, the
    /// position from `source` when there is one.
    pub fn located(&self, origin: &str, source: Option<&SourceMap>) -> String {
        ConfigError::at(origin, source, &self.at, self.message.clone()).to_string()
    }
}

/// Builds the server config of every https and tls listener of `config`,
/// by listener name; the problems, one per listener, if any fails.
pub fn server_configs(config: &Config) -> Result<TlsConfigs, Vec<TlsProblem>> {
    let mut out = HashMap::new();
    let mut errors = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let Some(tls) = &l.tls else { continue };
        match build(tls, alpn_of(l)) {
            Ok(c) => {
                out.insert(l.name.clone(), c);
            }
            Err((pair, e)) => errors.push(TlsProblem {
                at: match pair {
                    Some(k) => format!("listeners.{i}.tls.certificates.{k}"),
                    None => format!("listeners.{i}.tls"),
                },
                message: format!("listener {:?}: {e}", l.name),
            }),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Builds every https/tls listener's config as `run` and reload would and
/// returns the problems (unreadable files, a key that does not match its
/// certificate), each placed in `origin` (the config file's name) at the
/// certificate's line and column. Empty when all is well.
pub fn check_tls(loaded: &switchyard_config::Loaded, origin: &str) -> Vec<String> {
    match server_configs(&loaded.config) {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .iter()
            .map(|e| e.located(origin, Some(&loaded.source)))
            .collect(),
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

/// Loads one pair: the certificate file may hold a chain (leaf first).
fn load_pair(pair: &CertificatePair, provider: &CryptoProvider) -> Result<Loaded, String> {
    let cert_path = pair.cert_file.display();
    let key_path = pair.key_file.display();
    let cert_pem = read(&pair.cert_file, "certificate")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate {cert_path}: {e}"))?;
    if chain.is_empty() {
        return Err(format!("certificate {cert_path}: no CERTIFICATE block"));
    }
    let key_pem = read(&pair.key_file, "key")?;
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| format!("key {key_path}: {e}"))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("key {key_path}: {e}"))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => {}
        // The key type cannot report its public half: nothing to compare.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(format!(
                "certificate {cert_path} and key {key_path} do not match"
            ));
        }
        Err(e) => return Err(format!("certificate {cert_path}: {e}")),
    }
    // Checked once here so that the resolver can rely on it.
    let leaf = certified.cert[0].clone();
    webpki::EndEntityCert::try_from(&leaf)
        .map_err(|e| format!("certificate {cert_path}: not a usable X.509 certificate: {e}"))?;
    Ok(Loaded {
        leaf,
        key: Arc::new(certified),
    })
}

struct Loaded {
    /// The end-entity certificate, for name checks.
    leaf: CertificateDer<'static>,
    key: Arc<CertifiedKey>,
}

/// Chooses a certificate by SNI; the first is the default.
struct SniResolver {
    certs: Vec<Loaded>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver")
            .field("certificates", &self.certs.len())
            .finish()
    }
}

impl SniResolver {
    /// The index of the first certificate valid for `sni`, if any.
    fn find(&self, sni: &str) -> Option<usize> {
        let name = DnsName::try_from(sni).ok()?;
        let name = ServerName::DnsName(name);
        self.certs.iter().position(|c| {
            // Parsing borrows the DER; it is a walk over a few hundred
            // bytes, small next to the handshake's signature.
            webpki::EndEntityCert::try_from(&c.leaf)
                .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
        })
    }

    fn choose(&self, sni: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let i = match (sni, self.certs.len()) {
            // One certificate: nothing to choose.
            (_, 1) | (None, _) => 0,
            (Some(name), _) => self.find(name).unwrap_or(0),
        };
        self.certs.get(i).map(|c| &c.key)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(hello.server_name()).cloned()
    }
}

/// The TLS configs in force, by listener name: replaced whole by `control`
/// at start and at each reload, read by listeners at each accept.
#[derive(Default)]
pub struct TlsStore {
    by_listener: ArcSwap<TlsConfigs>,
}

impl TlsStore {
    /// The current config of listener `name`.
    pub fn get(&self, name: &str) -> Option<Arc<ServerConfig>> {
        self.by_listener.load().get(name).cloned()
    }

    /// Publishes a whole new set (from [`server_configs`]).
    pub fn replace(&self, configs: TlsConfigs) {
        self.by_listener.store(Arc::new(configs));
    }
}

/// `switchyard_tls_handshakes_total{listener,result}` handles for one
/// listener, registered once rather than looked up per handshake.
#[derive(Clone)]
pub struct HandshakeMetrics {
    ok: Counter,
    error: Counter,
}

impl HandshakeMetrics {
    /// Registers `listener`'s series, at 0, if it terminates TLS; other
    /// listeners get no TLS series (counts that could only stay 0).
    pub fn new(listener: &str, tls: bool) -> HandshakeMetrics {
        let c = |result: &'static str| {
            if !tls {
                return Counter::noop();
            }
            metrics::counter!(
                "switchyard_tls_handshakes_total",
                "listener" => listener.to_owned(),
                "result" => result
            )
        };
        HandshakeMetrics {
            ok: c("ok"),
            error: c("error"),
        }
    }

    /// Counts one finished handshake.
    pub fn record(&self, ok: bool) {
        if ok {
            self.ok.increment(1);
        } else {
            self.error.increment(1);
        }
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
