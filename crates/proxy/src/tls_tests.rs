//! Certificate loading and SNI selection, with certificates made by rcgen.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "switchyard-tls-unit-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate for `names`, written as `<stem>.pem` and
/// `<stem>.key`; returns the pair and the certificate's DER.
fn cert(dir: &Path, stem: &str, names: &[&str]) -> (CertificatePair, Vec<u8>) {
    let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let pair = CertificatePair {
        cert_file: dir.join(format!("{stem}.pem")),
        key_file: dir.join(format!("{stem}.key")),
    };
    std::fs::write(&pair.cert_file, cert.pem()).unwrap();
    std::fs::write(&pair.key_file, key.serialize_pem()).unwrap();
    (pair, cert.der().to_vec())
}

fn tls(pairs: &[&CertificatePair]) -> Tls {
    Tls {
        certificates: pairs.iter().map(|p| (*p).clone()).collect(),
        alpn: Vec::new(),
    }
}

fn resolver(pairs: &[&CertificatePair]) -> SniResolver {
    let provider = provider();
    SniResolver {
        certs: pairs
            .iter()
            .map(|p| load_pair(p, &provider).unwrap())
            .collect(),
    }
}

fn chosen(r: &SniResolver, sni: Option<&str>) -> Vec<u8> {
    r.choose(sni).unwrap().cert[0].to_vec()
}

#[test]
fn sni_picks_exact_and_wildcard_names_first_is_default() {
    let dir = Dir::new("sni");
    let (a, a_der) = cert(&dir.0, "a", &["a.test"]);
    let (b, b_der) = cert(&dir.0, "b", &["b.test", "*.wild.test"]);
    let r = resolver(&[&a, &b]);
    assert_eq!(chosen(&r, Some("a.test")), a_der);
    assert_eq!(chosen(&r, Some("b.test")), b_der);
    assert_eq!(chosen(&r, Some("x.wild.test")), b_der, "wildcard");
    assert_eq!(chosen(&r, Some("B.TEST")), b_der, "case-insensitive");
    assert_eq!(
        chosen(&r, Some("wild.test")),
        a_der,
        "wildcard covers one label only"
    );
    assert_eq!(chosen(&r, Some("y.x.wild.test")), a_der, "one label only");
    assert_eq!(
        chosen(&r, Some("unknown.test")),
        a_der,
        "unknown -> default"
    );
    assert_eq!(chosen(&r, None), a_der, "no SNI -> default");
}

#[test]
fn server_config_sets_alpn_and_loads_chains() {
    let dir = Dir::new("alpn");
    let (a, _) = cert(&dir.0, "a", &["a.test"]);
    // A chain: leaf then another certificate.
    let (other, _) = cert(&dir.0, "other", &["other.test"]);
    let mut chain = std::fs::read_to_string(&a.cert_file).unwrap();
    chain.push_str(&std::fs::read_to_string(&other.cert_file).unwrap());
    std::fs::write(&a.cert_file, chain).unwrap();
    let alpn = vec!["h2".to_owned(), "http/1.1".to_owned()];
    let config = server_config(&tls(&[&a]), &alpn).unwrap();
    assert_eq!(
        config.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    let loaded = load_pair(&a, &provider()).unwrap();
    assert_eq!(loaded.key.cert.len(), 2, "the whole chain is served");
}

#[test]
fn mismatched_key_names_both_files() {
    let dir = Dir::new("mismatch");
    let (a, _) = cert(&dir.0, "a", &["a.test"]);
    let (b, _) = cert(&dir.0, "b", &["b.test"]);
    let wrong = CertificatePair {
        cert_file: a.cert_file.clone(),
        key_file: b.key_file.clone(),
    };
    let err = server_config(&tls(&[&wrong]), &[]).unwrap_err();
    assert_eq!(
        err,
        format!(
            "certificate {} and key {} do not match",
            a.cert_file.display(),
            b.key_file.display()
        )
    );
}

#[test]
fn unreadable_and_malformed_files_are_named() {
    let dir = Dir::new("unreadable");
    let (a, _) = cert(&dir.0, "a", &["a.test"]);
    let missing = CertificatePair {
        cert_file: dir.0.join("nope.pem"),
        key_file: a.key_file.clone(),
    };
    let err = server_config(&tls(&[&missing]), &[]).unwrap_err();
    assert!(err.starts_with("cannot read certificate "), "{err}");
    assert!(err.contains("nope.pem"), "{err}");

    let garbage = dir.0.join("garbage.key");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let bad_key = CertificatePair {
        cert_file: a.cert_file.clone(),
        key_file: garbage,
    };
    let err = server_config(&tls(&[&bad_key]), &[]).unwrap_err();
    assert!(err.contains("garbage.key"), "{err}");
}

#[test]
fn a_reload_rereads_the_files() {
    let dir = Dir::new("reread");
    let (a, first) = cert(&dir.0, "a", &["a.test"]);
    let before = resolver(&[&a]);
    let (_, second) = cert(&dir.0, "a", &["a.test"]);
    assert_ne!(first, second);
    let after = resolver(&[&a]);
    assert_eq!(chosen(&before, Some("a.test")), first);
    assert_eq!(chosen(&after, Some("a.test")), second);
}
