//! The YAML exactly as written: serde structs that mirror the file.
//!
//! Every struct denies unknown fields (typos must not be silently ignored)
//! and every defaulted field is an `Option`, so that validation can tell
//! "absent" from "given": both the defaults and the "key does not apply
//! where it stands" rules need that. No `flatten`/`untagged`: they make
//! serde_yaml lose its error locations and defeat `deny_unknown_fields`.

use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::duration::DurationStr;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of configuration keys")]
pub(crate) struct RawConfig {
    pub workers: Option<usize>,
    pub admin: Option<RawAdmin>,
    pub shutdown: Option<RawShutdown>,
    pub access_log: Option<RawAccessLog>,
    pub listeners: Option<Vec<RawListener>>,
    pub target_groups: Option<Vec<RawTargetGroup>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an admin mapping")]
pub(crate) struct RawAdmin {
    pub bind: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a shutdown mapping")]
pub(crate) struct RawShutdown {
    pub drain_delay: Option<DurationStr>,
    pub timeout: Option<DurationStr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an access_log mapping")]
pub(crate) struct RawAccessLog {
    pub enabled: Option<bool>,
    pub path: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawListenerProtocol {
    Http,
    Https,
    Tcp,
    Tls,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a listener mapping")]
pub(crate) struct RawListener {
    pub name: String,
    pub bind: String,
    pub protocol: Option<RawListenerProtocol>,
    pub timeouts: Option<RawListenerTimeouts>,
    pub max_connections: Option<usize>,
    pub tls: Option<RawTls>,
    pub routes: Option<Vec<RawRoute>>,
    pub forward: Option<RawForward>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a listener timeouts mapping")]
pub(crate) struct RawListenerTimeouts {
    pub header_read: Option<DurationStr>,
    pub idle: Option<DurationStr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a tls mapping")]
pub(crate) struct RawTls {
    pub certificates: Option<Vec<RawCertificatePair>>,
    pub alpn: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with cert_file and key_file"
)]
pub(crate) struct RawCertificatePair {
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a route mapping")]
pub(crate) struct RawRoute {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: Option<RawMatch>,
    pub forward: Option<RawForward>,
    pub redirect: Option<RawRedirect>,
    pub fixed_response: Option<RawFixedResponse>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a match mapping")]
pub(crate) struct RawMatch {
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub path_exact: Option<String>,
    pub path_regex: Option<String>,
    pub method: Option<String>,
    pub headers: Option<OrderedPairs>,
}

/// A string-to-string mapping kept in file order, so that validation can
/// point at the second of two keys that differ only in case.
#[derive(Debug, Default)]
pub(crate) struct OrderedPairs(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for OrderedPairs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;

        impl<'de> Visitor<'de> for V {
            type Value = OrderedPairs;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a mapping of header names to values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedPairs, A::Error> {
                let mut pairs = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    pairs.push((k, v));
                }
                Ok(OrderedPairs(pairs))
            }
        }

        deserializer.deserialize_map(V)
    }
}

/// `forward:` on a route or on a tcp/tls listener. Exactly one of
/// `target_group` and `target_groups` must be given (checked in validation,
/// where the error can be located and name the route).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a forward mapping")]
pub(crate) struct RawForward {
    pub target_group: Option<String>,
    pub target_groups: Option<Vec<RawWeightedGroup>>,
    pub stickiness: Option<RawStickiness>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with name and weight")]
pub(crate) struct RawWeightedGroup {
    pub name: String,
    /// Default 1.
    pub weight: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a stickiness mapping")]
pub(crate) struct RawStickiness {
    pub cookie: Option<String>,
    pub duration: Option<DurationStr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a redirect mapping")]
pub(crate) struct RawRedirect {
    pub location: Option<String>,
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub status: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a fixed_response mapping")]
pub(crate) struct RawFixedResponse {
    pub status: Option<u16>,
    pub content_type: Option<String>,
    pub body: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawGroupProtocol {
    Http,
    Http2,
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawBalance {
    RoundRobin,
    LeastRequest,
    Random,
    ConsistentHash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawProxyProtocol {
    V2,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a target group mapping")]
pub(crate) struct RawTargetGroup {
    pub name: String,
    pub protocol: Option<RawGroupProtocol>,
    pub balance: Option<RawBalance>,
    pub hash_on: Option<String>,
    pub targets: Option<Vec<RawTarget>>,
    pub health_check: Option<RawHealthCheck>,
    pub outlier_detection: Option<RawOutlierDetection>,
    pub deregistration_delay: Option<DurationStr>,
    pub slow_start: Option<DurationStr>,
    pub fail_open: Option<bool>,
    pub failover: Option<String>,
    pub stickiness: Option<RawStickiness>,
    pub retries: Option<RawRetries>,
    pub timeouts: Option<RawGroupTimeouts>,
    pub limits: Option<RawLimits>,
    pub proxy_protocol: Option<RawProxyProtocol>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a target mapping with address and weight"
)]
pub(crate) struct RawTarget {
    pub address: String,
    /// Default 1.
    pub weight: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawCheckProtocol {
    Http,
    Tcp,
    #[serde(rename = "none")]
    Disabled,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a health_check mapping")]
pub(crate) struct RawHealthCheck {
    pub protocol: Option<RawCheckProtocol>,
    pub path: Option<String>,
    pub port: Option<u16>,
    pub host: Option<String>,
    pub interval: Option<DurationStr>,
    pub timeout: Option<DurationStr>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
    /// `"200"`, `"200,204"`, `"200-299"`; a bare YAML integer reads as text.
    pub matcher: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an outlier_detection mapping")]
pub(crate) struct RawOutlierDetection {
    pub consecutive_failures: Option<u32>,
    pub ejection: Option<DurationStr>,
    pub max_ejected_percent: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a retries mapping")]
pub(crate) struct RawRetries {
    pub attempts: Option<u32>,
    pub backoff: Option<DurationStr>,
    /// `connect_failure`, `reset` or a 5xx status; serde_yaml hands a YAML
    /// integer such as `502` to a `String` as its text, quoted or not.
    pub on: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a target group timeouts mapping")]
pub(crate) struct RawGroupTimeouts {
    pub connect: Option<DurationStr>,
    pub request: Option<DurationStr>,
    pub idle: Option<DurationStr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a limits mapping")]
pub(crate) struct RawLimits {
    pub max_connections: Option<u32>,
    pub max_pending: Option<u32>,
    pub max_requests: Option<u32>,
}
