//! The JSON API under `/api/v1/`: target groups, runtime registration,
//! config status, reload.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use switchyard_control::{ApiError, Control};
use switchyard_routing::{Snapshot, Target};

use crate::time::rfc3339;

/// Request bodies larger than this are refused (400).
pub const MAX_BODY: usize = 64 * 1024;

fn target_json(t: &Target) -> serde_json::Value {
    serde_json::json!({
        "address": t.label(),
        "weight": t.weight(),
        "state": t.state().as_str(),
        "reason": t.reason(),
        "in_flight": t.in_flight(),
        "last_check": t.last_check().map(|c| serde_json::json!({
            "result": c.result,
            "at": rfc3339(c.at),
            "detail": c.detail,
        })),
    })
}

/// `GET /api/v1/target-groups`, shaped as INTERFACE.md shows; draining
/// targets are listed (state `draining`) until they are forgotten.
pub fn target_groups(snap: &Snapshot) -> serde_json::Value {
    let groups: Vec<serde_json::Value> = snap
        .groups
        .iter()
        .map(|g| {
            let targets: Vec<serde_json::Value> = g
                .targets
                .iter()
                .chain(&g.draining)
                .map(|t| target_json(t))
                .collect();
            serde_json::json!({ "name": g.name(), "targets": targets })
        })
        .collect();
    serde_json::json!({ "target_groups": groups })
}

/// `GET /api/v1/config`.
pub fn config_status(control: &Control) -> serde_json::Value {
    let s = control.status();
    serde_json::json!({
        "version": s.version,
        "loaded_at": rfc3339(s.loaded_at),
        "path": control.config_path().map(|p| p.display().to_string()),
        "last_reload": s.last_reload.map(|r| serde_json::json!({
            "result": if r.ok { "ok" } else { "error" },
            "at": rfc3339(r.at),
            "error": r.error,
        })),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Register {
    address: String,
    #[serde(default = "one")]
    weight: u32,
}

fn one() -> u32 {
    1
}

fn error(status: StatusCode, msg: impl Into<String>) -> (StatusCode, serde_json::Value) {
    (status, serde_json::json!({ "error": msg.into() }))
}

fn api_error(e: ApiError) -> (StatusCode, serde_json::Value) {
    match e {
        ApiError::NotFound(m) => error(StatusCode::NOT_FOUND, m),
        ApiError::Conflict(m) => error(StatusCode::CONFLICT, m),
        ApiError::BadRequest(m) => error(StatusCode::BAD_REQUEST, m),
    }
}

/// `POST /api/v1/target-groups/{group}/targets`.
pub fn register(
    control: &Arc<Control>,
    group: &str,
    body: &Bytes,
) -> (StatusCode, serde_json::Value) {
    let req: Register = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body must be {{\"address\": \"IP:PORT\", \"weight\": 1}}: {e}"),
            )
        }
    };
    match control.register(group, &req.address, req.weight) {
        Ok((state, weight)) => (
            StatusCode::CREATED,
            serde_json::json!({ "target_group": group, "address": req.address, "weight": weight, "state": state.as_str() }),
        ),
        Err(e) => api_error(e),
    }
}

/// `DELETE /api/v1/target-groups/{group}/targets/{address}`.
pub fn deregister(
    control: &Arc<Control>,
    group: &str,
    address: &str,
) -> (StatusCode, serde_json::Value) {
    match control.deregister(group, address) {
        Ok(()) => (
            StatusCode::ACCEPTED,
            serde_json::json!({ "target_group": group, "address": address, "state": "draining" }),
        ),
        Err(e) => api_error(e),
    }
}

/// `POST /api/v1/reload`.
pub async fn reload(control: &Arc<Control>) -> (StatusCode, serde_json::Value) {
    match control.reload().await {
        Ok(version) => (
            StatusCode::OK,
            serde_json::json!({ "result": "ok", "version": version }),
        ),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "result": "error", "error": e }),
        ),
    }
}

/// Percent-decodes one path segment (`127.0.0.1%3A9003` -> `127.0.0.1:9003`).
/// `None` when the encoding is broken or not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn decodes_addresses() {
        assert_eq!(
            percent_decode("127.0.0.1%3A9003").as_deref(),
            Some("127.0.0.1:9003")
        );
        assert_eq!(
            percent_decode("127.0.0.1:9003").as_deref(),
            Some("127.0.0.1:9003")
        );
        assert_eq!(
            percent_decode("%5B%3A%3A1%5D%3A80").as_deref(),
            Some("[::1]:80")
        );
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }
}
