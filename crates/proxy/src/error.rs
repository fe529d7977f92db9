//! Errors the proxy makes itself, with the side that caused them, and the
//! one function that maps them to statuses.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::ProxyBody;

/// Who failed: decides the status and whether a retry can help.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The client sent something we refuse (400).
    #[error("{0}")]
    BadRequest(&'static str),
    /// No route matched (404).
    #[error("no route")]
    NoRoute,
    /// No usable target, every weight 0, or a limit was hit (503).
    #[error("{0}")]
    Unavailable(&'static str),
    /// Could not connect to the target: nothing was sent (502).
    #[error("connect to {target}: {reason}")]
    Connect { target: String, reason: String },
    /// The upstream reset, closed or spoke bad HTTP (502).
    #[error("upstream {target}: {reason}")]
    Upstream { target: String, reason: String },
    /// The upstream's response head did not come within timeouts.request (504).
    #[error("upstream {target} timed out")]
    Timeout { target: String },
    /// timeouts.request ran out while the client held back its request
    /// body (408): the target is not blamed.
    #[error("client request body timed out")]
    ClientTimeout,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect { .. } | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The short text body the client sees. Static: no upstream detail
    /// leaks to clients (it is logged instead).
    fn body(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "bad request\n",
            ProxyError::NoRoute => "no route matched\n",
            ProxyError::Unavailable(why) => why,
            ProxyError::Connect { .. } | ProxyError::Upstream { .. } => "bad gateway\n",
            ProxyError::Timeout { .. } => "upstream timed out\n",
            ProxyError::ClientTimeout => "request body timed out\n",
        }
    }

    pub fn into_response(self) -> Response<ProxyBody> {
        text_response(self.status(), self.body())
    }
}

/// A short `text/plain` answer made by the balancer itself.
pub fn text_response(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
