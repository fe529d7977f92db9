//! A small HTTP client for tests (there is no reqwest here) on hyper-util's
//! legacy client, and [`raw_exchange`] for bytes-on-the-wire tests.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Bound on one whole request (connect, send, read the full body) for the
/// free functions and a new [`TestClient`]: 10 seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A response with its body read.
#[derive(Debug, Clone)]
pub struct TestResponse {
    /// Status code, e.g. 200.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body, converted lossily to UTF-8.
    pub body: String,
}

impl TestResponse {
    /// The first value of header `name` as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An HTTP client that keeps connections alive between requests, for tests
/// that count connections. Create one per test: its pooled connections
/// belong to the tokio runtime that opened them.
#[derive(Debug, Clone)]
pub struct TestClient {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Default for TestClient {
    fn default() -> Self {
        Self::new()
    }
}

impl TestClient {
    /// HTTP/1.1 client with keep-alive and [`DEFAULT_TIMEOUT`].
    pub fn new() -> Self {
        TestClient {
            client: Client::builder(TokioExecutor::new()).build_http(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// HTTP/2 cleartext client (prior knowledge, no upgrade): all requests
    /// to one address share one connection.
    pub fn h2c() -> Self {
        TestClient {
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Replaces the bound on each whole request.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `GET url`. See [`request`](Self::request).
    pub async fn get(&self, url: &str) -> Result<TestResponse, String> {
        self.request("GET", url, &[], Bytes::new()).await
    }

    /// `GET url` with extra headers. See [`request`](Self::request).
    pub async fn get_with(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<TestResponse, String> {
        self.request("GET", url, headers, Bytes::new()).await
    }

    /// Sends one request and reads the whole response.
    ///
    /// `url` is absolute (`http://127.0.0.1:1234/path`). `headers` are
    /// appended in order (a name may repeat); a `host` header given here
    /// replaces the one derived from the URL. Any status is `Ok`; `Err`
    /// describes a bad argument, a connect or protocol failure (with its
    /// causes), or the timeout.
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<TestResponse, String> {
        let req = build_request(method, url, headers, body.into())?;
        match tokio::time::timeout(self.timeout, self.send(req)).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "{method} {url}: timed out after {:?}",
                self.timeout
            )),
        }
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Result<TestResponse, String> {
        let context = format!("{} {}", req.method(), req.uri());
        let response = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("{context}: {}", chain(&e)))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("{context}: reading body: {}", chain(&e)))?
            .to_bytes();
        Ok(TestResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

fn build_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|e| format!("method {method:?}: {e}"))?;
    let uri: Uri = url.parse().map_err(|e| format!("url {url:?}: {e}"))?;
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    for (name, value) in headers {
        let name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("header {name:?}: {e}"))?;
        let value =
            HeaderValue::from_str(value).map_err(|e| format!("header value {value:?}: {e}"))?;
        req.headers_mut().append(name, value);
    }
    Ok(req)
}

/// An error and its causes, `outer: inner: innermost` (the legacy client's
/// own message alone, "client error (Connect)", says too little).
fn chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `GET url` on a fresh connection (a new client per call, so never
/// reused). Bounded by [`DEFAULT_TIMEOUT`]; see [`TestClient::request`].
pub async fn get(url: &str) -> Result<TestResponse, String> {
    TestClient::new().get(url).await
}

/// `GET url` with extra headers, on a fresh connection; see
/// [`TestClient::request`].
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Result<TestResponse, String> {
    TestClient::new().get_with(url, headers).await
}

/// Any request on a fresh connection; see [`TestClient::request`].
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<TestResponse, String> {
    TestClient::new().request(method, url, headers, body).await
}

/// Connects to `addr`, writes `bytes`, then reads until the peer closes or
/// `read_timeout` has passed since the write, and returns what came back
/// (lossy UTF-8). A reset after some data returns that data.
///
/// The write side stays open (a half-close makes some servers drop the
/// request), so against a keep-alive server this waits the full timeout:
/// send `Connection: close` to finish early.
///
/// # Panics
///
/// If connecting or writing fails within `read_timeout`, which is a broken
/// test rather than an answer.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], read_timeout: Duration) -> String {
    let mut stream = match tokio::time::timeout(read_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => panic!("raw_exchange: connect {addr}: {e}"),
        Err(_) => panic!("raw_exchange: connect {addr}: timed out after {read_timeout:?}"),
    };
    if let Err(e) = stream.write_all(bytes).await {
        panic!("raw_exchange: write to {addr}: {e}");
    }
    let deadline = Instant::now() + read_timeout;
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}
