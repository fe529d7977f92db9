//! How a [`FakeUpstream`](super::FakeUpstream) answers one request: the
//! health path, the special test paths, and the default answer. The table
//! is documented on `FakeUpstream`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::{lock, ConnControl, RecordedRequest, Shared};

type Answer = Result<Response<Full<Bytes>>, Infallible>;

const TEXT_PLAIN: &str = "text/plain";

/// The service function of every fake-upstream connection.
pub(super) async fn answer(
    shared: Arc<Shared>,
    control: Arc<ConnControl>,
    req: Request<Incoming>,
) -> Answer {
    let path = req.uri().path().to_owned();
    if path == shared.health_path {
        return Ok(health(&shared, &control, req).await);
    }

    let is_http1 = req.version() < Version::HTTP_2;
    let recorded = read(req).await;
    let (headers, body, content_type) = (
        recorded.headers.clone(),
        recorded.body.clone(),
        recorded.headers.get(CONTENT_TYPE).cloned(),
    );
    shared.record(recorded);

    let delay = shared.delay();
    if !delay.is_zero() && !control.sleep(delay).await {
        return Ok(gone(&shared));
    }

    let response = match path.as_str() {
        "/reset" => {
            control.reset.notify_one();
            control.gone().await;
            gone(&shared)
        }
        "/close" => {
            control.close.notify_one();
            let mut response = default_answer(&shared);
            if is_http1 {
                // HTTP/2 forbids connection headers; there the GOAWAY says it.
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
        "/echo" => {
            let content_type = content_type
                .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
            respond(&shared, StatusCode::OK, content_type, body)
        }
        "/headers" => respond(
            &shared,
            StatusCode::OK,
            HeaderValue::from_static("application/json"),
            headers_json(&headers),
        ),
        _ => {
            if let Some(code) = path.strip_prefix("/status/") {
                match code
                    .parse::<u16>()
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                {
                    Some(status) => name_answer(&shared, status),
                    None => text(&shared, StatusCode::BAD_REQUEST, "bad status"),
                }
            } else if let Some(ms) = path.strip_prefix("/sleep/") {
                match ms.parse::<u64>() {
                    Ok(ms) => {
                        if !control.sleep(Duration::from_millis(ms)).await {
                            return Ok(gone(&shared));
                        }
                        name_answer(&shared, StatusCode::OK)
                    }
                    Err(_) => text(&shared, StatusCode::BAD_REQUEST, "bad milliseconds"),
                }
            } else {
                default_answer(&shared)
            }
        }
    };
    Ok(response)
}

/// The health path: counted apart, never delayed.
async fn health(
    shared: &Shared,
    control: &ConnControl,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let recorded = read(req).await;
    *lock(&shared.last_health) = Some(recorded);
    shared.health_requests.fetch_add(1, Relaxed);
    if shared.hang_health.load(Relaxed) {
        control.gone().await;
        return gone(shared);
    }
    if shared.healthy.load(Relaxed) {
        text(shared, StatusCode::OK, "ok")
    } else {
        text(shared, StatusCode::SERVICE_UNAVAILABLE, "unhealthy")
    }
}

/// Reads the whole request. A body that fails mid-way (client gone) is
/// recorded as empty rather than failing the handler.
async fn read(req: Request<Incoming>) -> RecordedRequest {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    RecordedRequest {
        method: parts.method,
        authority: parts.uri.authority().map(|a| a.as_str().to_owned()),
        uri: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()),
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

/// The default answer: configured status, the name (or sized body).
fn default_answer(shared: &Shared) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(shared.status.load(Relaxed)).unwrap_or(StatusCode::OK);
    name_answer(shared, status)
}

fn name_answer(shared: &Shared, status: StatusCode) -> Response<Full<Bytes>> {
    respond(
        shared,
        status,
        HeaderValue::from_static(TEXT_PLAIN),
        shared.body.clone(),
    )
}

fn text(shared: &Shared, status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    respond(
        shared,
        status,
        HeaderValue::from_static(TEXT_PLAIN),
        Bytes::from_static(body.as_bytes()),
    )
}

/// What a handler returns when its connection is already gone; nobody will
/// read it.
fn gone(shared: &Shared) -> Response<Full<Bytes>> {
    text(shared, StatusCode::SERVICE_UNAVAILABLE, "gone")
}

fn respond(
    shared: &Shared,
    status: StatusCode,
    content_type: HeaderValue,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert("x-upstream", shared.name_header.clone());
    headers.insert(CONTENT_TYPE, content_type);
    response
}

/// `{"name": "v1, v2", ...}`, names lower-case (as `HeaderMap` keeps them)
/// and sorted; values that are not UTF-8 are converted lossily.
fn headers_json(headers: &HeaderMap) -> Bytes {
    let mut map: BTreeMap<&str, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        map.entry(name.as_str())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    Bytes::from(serde_json::to_vec(&map).unwrap_or_default())
}
