//! `tls` listeners: TLS terminated with certificates chosen by SNI (the
//! first as default), plaintext forwarded as a tcp listener does,
//! handshakes counted; certificates re-read on reload; a key that does not
//! match its certificate refused at start and reload, naming both files.

// Test helpers: a panic is how a failed expectation is reported.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;

use switchyard::Running;
use switchyard_testkit::{eventually, TcpEcho};
use switchyard_tests::certs::{
    connect as tls_connect, peer_der, served_cert, Leaf, TestCa, Verify,
};
use switchyard_tests::l4::{closed_within, connect, echo, tls_key, tls_listener};
use switchyard_tests::live::{reload, reload_ok, ConfigFile, TempDir};
use switchyard_tests::{metric, must_get, Cfg, Group, Urls, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn tcp_group(name: &str, targets: &[SocketAddr]) -> Group {
    Group::new(name, targets).with("protocol: tcp")
}

/// One tls listener `listener` with these certificates, to group `g`.
fn config(listener: &str, certs: &[&Leaf], target: SocketAddr) -> String {
    let certs: Vec<String> = certs.iter().map(|c| c.yaml()).collect();
    Cfg::new()
        .listener_yaml(&tls_listener(listener, &tls_key(&certs), &[("g", 1)]))
        .group(tcp_group("g", &[target]))
        .yaml()
}

fn addr_of(lb: &Running, listener: &str) -> SocketAddr {
    lb.addr(listener)
        .unwrap_or_else(|| panic!("no listener {listener}"))
}

async fn handshakes(lb: &Running, listener: &str, result: &str) -> Option<f64> {
    let text = must_get(&lb.admin_url("/metrics")).await.body;
    metric(
        &text,
        "switchyard_tls_handshakes_total",
        &[("listener", listener), ("result", result)],
    )
}

#[tokio::test]
async fn tls_listener_forwards_the_plaintext() {
    let dir = TempDir::new("tls-plain");
    let ca = TestCa::new();
    let a = ca.issue(dir.path(), "a", &["a.test"]);
    // An upstream that reports the first bytes it reads, then echoes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut first = [0u8; 5];
        stream.read_exact(&mut first).await.unwrap();
        let _ = first_tx.send(first.to_vec());
        stream.write_all(&first).await.unwrap();
        let (mut r, mut w) = stream.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    let lb = Cfg::new()
        .listener_yaml(&tls_listener(
            "tls-plain",
            &tls_key(&[a.yaml()]),
            &[("g", 1)],
        ))
        .group(tcp_group("g", &[up]))
        .start()
        .await;
    let addr = addr_of(&lb, "tls-plain");

    // A real client: verifies the chain to the test CA for a.test.
    let mut client = tls_connect(addr, Some("a.test"), Verify::Ca(&ca))
        .await
        .expect("handshake with a verifying client");
    echo(&mut client, b"hello").await;
    let first = tokio::time::timeout(WAIT, first_rx).await.unwrap().unwrap();
    assert_eq!(first, b"hello", "the target reads plaintext");
    echo(&mut client, b"and more after it").await;
    // Half-close through TLS: close_notify, and the rest still arrives.
    client.write_all(b"last words").await.unwrap();
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, client.read_to_end(&mut rest))
        .await
        .expect("no EOF after the echo")
        .unwrap();
    assert_eq!(rest, b"last words");
    assert_eq!(handshakes(&lb, "tls-plain", "ok").await, Some(1.0));

    // A client speaking plaintext to it fails the handshake and is closed.
    let mut plain = connect(addr).await;
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    closed_within(&mut plain, WAIT)
        .await
        .expect("a non-TLS client was not closed");
    eventually!(
        WAIT,
        handshakes(&lb, "tls-plain", "error").await == Some(1.0)
    );
}

#[tokio::test]
async fn sni_chooses_the_certificate_and_the_first_is_the_default() {
    let dir = TempDir::new("tls-sni");
    let ca = TestCa::new();
    let a = ca.issue(dir.path(), "a", &["a.test"]);
    let b = ca.issue(dir.path(), "b", &["b.test", "*.b.test"]);
    let up = TcpEcho::start().await;
    let lb = Cfg::new()
        .listener_yaml(&tls_listener(
            "tls-sni",
            &tls_key(&[a.yaml(), b.yaml()]),
            &[("g", 1)],
        ))
        .group(tcp_group("g", &[up.addr()]))
        .start()
        .await;
    let addr = addr_of(&lb, "tls-sni");

    assert_eq!(served_cert(addr, Some("a.test")).await, a.der, "a.test");
    assert_eq!(served_cert(addr, Some("b.test")).await, b.der, "b.test");
    assert_eq!(served_cert(addr, Some("x.b.test")).await, b.der, "wildcard");
    assert_eq!(served_cert(addr, None).await, a.der, "no SNI: the default");
    assert_eq!(
        served_cert(addr, Some("c.test")).await,
        a.der,
        "unknown: the default"
    );

    // A verifying client accepts what it is served for each name.
    for name in ["a.test", "b.test", "x.b.test"] {
        let mut client = tls_connect(addr, Some(name), Verify::Ca(&ca))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        echo(&mut client, name.as_bytes()).await;
    }
}

#[tokio::test]
async fn a_reload_presents_the_renewed_certificate() {
    let up = TcpEcho::start().await;
    let file = ConfigFile::new("tls-renew", "# written below\n");
    let ca = TestCa::new();
    let first = ca.issue(file.dir(), "site", &["a.test"]);
    // Relative paths: resolved against the config file's directory.
    let relative = Leaf {
        cert_file: "site.pem".into(),
        key_file: "site.key".into(),
        der: first.der.clone(),
    };
    file.overwrite(&config("tls-renew", &[&relative], up.addr()));
    let lb = file.start().await;
    let addr = addr_of(&lb, "tls-renew");
    assert_eq!(served_cert(addr, Some("a.test")).await, first.der);

    // Renewed on disk: served from the next reload on, not before.
    let renewed = ca.issue(file.dir(), "site", &["a.test"]);
    assert_ne!(renewed.der, first.der);
    assert_eq!(served_cert(addr, Some("a.test")).await, first.der);
    reload_ok(&lb).await;
    assert_eq!(served_cert(addr, Some("a.test")).await, renewed.der);
    let mut client = tls_connect(addr, Some("a.test"), Verify::Ca(&ca))
        .await
        .unwrap();
    assert_eq!(peer_der(&client), Some(renewed.der.clone()));
    echo(&mut client, b"renewed").await;
}

fn mismatch_message(cert: &Path, key: &Path) -> String {
    format!(
        "certificate {} and key {} do not match",
        cert.display(),
        key.display()
    )
}

#[tokio::test]
async fn a_mismatched_key_fails_start_and_reload_naming_both_files() {
    let up = TcpEcho::start().await;
    let ca = TestCa::new();
    let dir = TempDir::new("tls-mismatch");
    let a = ca.issue(dir.path(), "a", &["a.test"]);
    let b = ca.issue(dir.path(), "b", &["b.test"]);
    let wrong = Leaf {
        cert_file: a.cert_file.clone(),
        key_file: b.key_file.clone(),
        der: a.der.clone(),
    };
    let want = mismatch_message(&a.cert_file, &b.key_file);

    // At start.
    let yaml = config("tls-bad", &[&wrong], up.addr());
    let loaded =
        switchyard_config::parse_str(&yaml, "test.yaml", Path::new(".")).expect("valid YAML");
    let err = match switchyard::start(loaded.config).await {
        Ok(_) => panic!("started with a key that does not match its certificate"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains(&want), "{err}");
    assert!(err.contains("listener \"tls-bad\""), "{err}");

    // At reload: refused, the running certificate stays.
    let file = ConfigFile::new("tls-mismatch-reload", &config("tls-ok", &[&a], up.addr()));
    let lb = file.start().await;
    let addr = addr_of(&lb, "tls-ok");
    file.overwrite(&config("tls-ok", &[&wrong], up.addr()));
    let (status, body) = reload(&lb).await;
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains(&want), "{body}");
    // `file:line:col:` in front, as every config error has.
    let place = error.split(": listener").next().unwrap_or_default();
    let mut parts = place.rsplitn(3, ':');
    let (col, line) = (parts.next(), parts.next());
    assert!(
        [col, line]
            .iter()
            .all(|p| p.is_some_and(|p| p.parse::<u32>().is_ok_and(|n| n > 0))),
        "{error}"
    );
    assert_eq!(served_cert(addr, Some("a.test")).await, a.der);
}
