//! Listeners: bind addresses, protocol-dependent keys (tls, routes,
//! forward), certificates, and bind clashes with each other and the admin API.

use crate::model::{Address, CertificatePair, Listener, ListenerProtocol, ListenerTimeouts, Tls};
use crate::raw::{RawConfig, RawListener, RawListenerProtocol, RawTls};

use super::fields::{check_pem, parse_address, resolve, Pem};
use super::forward::{forward, Forwarder};
use super::{dur, routes, Ctx, GroupIndex, DEFAULT_ADMIN_BIND};

pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
const ALPN_SUPPORTED: [&str; 2] = ["h2", "http/1.1"];

pub(crate) fn validate_listeners(
    ctx: &mut Ctx<'_>,
    raws: &[RawListener],
    groups: &GroupIndex,
) -> Vec<Listener> {
    let listeners = raws
        .iter()
        .enumerate()
        .map(|(i, raw)| listener(ctx, raw, &format!("listeners.{i}"), groups))
        .collect();
    let names: Vec<(String, String)> = raws
        .iter()
        .enumerate()
        .map(|(i, l)| (l.name.clone(), format!("listeners.{i}.name")))
        .collect();
    ctx.check_duplicates(&names, "", "listener name");
    listeners
}

fn protocol_name(p: ListenerProtocol) -> &'static str {
    match p {
        ListenerProtocol::Http => "http",
        ListenerProtocol::Https => "https",
        ListenerProtocol::Tcp => "tcp",
        ListenerProtocol::Tls => "tls",
    }
}

fn listener(ctx: &mut Ctx<'_>, raw: &RawListener, p: &str, groups: &GroupIndex) -> Listener {
    if raw.name.is_empty() {
        ctx.error(
            &format!("{p}.name"),
            "listener name must not be empty".to_string(),
        );
    }
    let owner = format!("listener \"{}\"", raw.name);
    // Absent protocol means http: the common case, and the only one that
    // needs no other key to be complete.
    let protocol = match raw.protocol {
        None | Some(RawListenerProtocol::Http) => ListenerProtocol::Http,
        Some(RawListenerProtocol::Https) => ListenerProtocol::Https,
        Some(RawListenerProtocol::Tcp) => ListenerProtocol::Tcp,
        Some(RawListenerProtocol::Tls) => ListenerProtocol::Tls,
    };
    let proto = protocol_name(protocol);

    let bind = parse_address(&raw.bind, 0).unwrap_or_else(|e| {
        ctx.error(
            &format!("{p}.bind"),
            format!("{owner}: invalid bind address \"{}\": {e}", raw.bind),
        );
        Address {
            host: String::new(),
            port: 0,
        }
    });

    // A tcp listener reads no request head and does no handshake.
    if protocol == ListenerProtocol::Tcp
        && raw
            .timeouts
            .as_ref()
            .is_some_and(|t| t.header_read.is_some())
    {
        ctx.error(
            &format!("{p}.timeouts.header_read"),
            format!("{owner}: timeouts.header_read does not apply to protocol tcp (it bounds a request head, or a tls listener's handshake)"),
        );
    }
    let timeouts = ListenerTimeouts {
        header_read: dur(raw.timeouts.as_ref().and_then(|t| t.header_read), 10_000),
        idle: dur(raw.timeouts.as_ref().and_then(|t| t.idle), 60_000),
    };

    let max_connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        ctx.error(
            &format!("{p}.max_connections"),
            format!("{owner}: max_connections must be at least 1"),
        );
    }

    let needs_tls = matches!(protocol, ListenerProtocol::Https | ListenerProtocol::Tls);
    let tls = match (&raw.tls, needs_tls) {
        (Some(t), true) => Some(tls(ctx, t, &format!("{p}.tls"), &owner, protocol)),
        (None, true) => {
            ctx.error(
                &format!("{p}.protocol"),
                format!("{owner}: protocol {proto} requires tls"),
            );
            None
        }
        (Some(_), false) => {
            ctx.error(
                &format!("{p}.tls"),
                format!("{owner}: tls does not apply to protocol {proto}"),
            );
            None
        }
        (None, false) => None,
    };

    let mut route_list = Vec::new();
    let mut fwd = None;
    if protocol.is_http() {
        if raw.forward.is_some() {
            ctx.error(
                &format!("{p}.forward"),
                format!("{owner}: forward does not apply to protocol {proto}; use routes"),
            );
        }
        // No routes at all is allowed: every request then gets 404.
        if let Some(raws) = &raw.routes {
            route_list = routes::validate_routes(ctx, raws, &format!("{p}.routes"), &owner, groups);
        }
    } else {
        if raw.routes.is_some() {
            ctx.error(
                &format!("{p}.routes"),
                format!("{owner}: routes do not apply to protocol {proto}; use forward"),
            );
        }
        match &raw.forward {
            Some(f) => {
                fwd = Some(forward(
                    ctx,
                    f,
                    &format!("{p}.forward"),
                    &owner,
                    groups,
                    Forwarder::Listener(proto),
                ));
            }
            None => ctx.error(
                &format!("{p}.protocol"),
                format!("{owner}: protocol {proto} requires forward"),
            ),
        }
    }

    Listener {
        name: raw.name.clone(),
        bind,
        protocol,
        timeouts,
        max_connections,
        tls,
        routes: route_list,
        forward: fwd,
    }
}

fn tls(ctx: &mut Ctx<'_>, raw: &RawTls, p: &str, owner: &str, protocol: ListenerProtocol) -> Tls {
    let mut certificates = Vec::new();
    let certs = raw.certificates.as_deref().unwrap_or_default();
    if certs.is_empty() {
        ctx.error(
            &format!("{p}.certificates"),
            format!("{owner}: tls needs at least one entry in certificates"),
        );
    }
    for (k, c) in certs.iter().enumerate() {
        let cert_file = resolve(ctx.base_dir, &c.cert_file);
        let key_file = resolve(ctx.base_dir, &c.key_file);
        if let Err(e) = check_pem(&cert_file, Pem::Certificate) {
            ctx.error(
                &format!("{p}.certificates.{k}.cert_file"),
                format!("{owner}: cert_file {e}"),
            );
        }
        if let Err(e) = check_pem(&key_file, Pem::PrivateKey) {
            ctx.error(
                &format!("{p}.certificates.{k}.key_file"),
                format!("{owner}: key_file {e}"),
            );
        }
        certificates.push(CertificatePair {
            cert_file,
            key_file,
        });
    }

    let alpn = match (protocol, &raw.alpn) {
        (ListenerProtocol::Https, None) => ALPN_SUPPORTED.iter().map(|s| s.to_string()).collect(),
        (ListenerProtocol::Https, Some(list)) => {
            for (k, a) in list.iter().enumerate() {
                if !ALPN_SUPPORTED.contains(&a.as_str()) {
                    ctx.error(
                        &format!("{p}.alpn.{k}"),
                        format!("{owner}: alpn protocol \"{a}\" is not supported (h2 or http/1.1)"),
                    );
                }
            }
            list.clone()
        }
        (_, Some(_)) => {
            ctx.error(
                &format!("{p}.alpn"),
                format!(
                    "{owner}: alpn does not apply to protocol {}; only https listeners speak ALPN",
                    protocol_name(protocol)
                ),
            );
            Vec::new()
        }
        (_, None) => Vec::new(),
    };
    Tls { certificates, alpn }
}

/// Two sockets on one port clash when their hosts are equal or either is a
/// wildcard (`0.0.0.0`, `::`), since the wildcard takes every interface.
/// Port 0 (ephemeral, used by tests) never clashes.
fn clashes(a: &Address, b: &Address) -> bool {
    let wildcard = |h: &str| h == "0.0.0.0" || h == "::";
    a.port != 0
        && a.port == b.port
        && (a.host.eq_ignore_ascii_case(&b.host) || wildcard(&a.host) || wildcard(&b.host))
}

/// Reports a bind that clashes with one that stands earlier in the file
/// (the default admin bind counts as first), at the later one.
pub(crate) fn check_binds(ctx: &mut Ctx<'_>, raw: &RawConfig, listeners: &[RawListener]) {
    // (label, address, path of the bind key)
    let mut binds: Vec<(String, Address, String)> = Vec::new();
    let admin_bind = raw
        .admin
        .as_ref()
        .and_then(|a| a.bind.as_deref())
        .unwrap_or(DEFAULT_ADMIN_BIND);
    if let Ok(a) = parse_address(admin_bind, 0) {
        binds.push(("admin".to_string(), a, "admin.bind".to_string()));
    }
    for (i, l) in listeners.iter().enumerate() {
        if let Ok(a) = parse_address(&l.bind, 0) {
            binds.push((
                format!("listener \"{}\"", l.name),
                a,
                format!("listeners.{i}.bind"),
            ));
        }
    }
    binds.sort_by_key(|b| ctx.location(&b.2));
    for j in 1..binds.len() {
        if let Some(first) = binds[..j].iter().find(|b| clashes(&b.1, &binds[j].1)) {
            let at = match ctx.location(&first.2) {
                Some(loc) => format!("line {}", loc.line),
                None => "the default".to_string(),
            };
            let msg = format!(
                "{}: bind address {} clashes with {} bound to {} ({at})",
                binds[j].0, binds[j].1, first.0, first.1,
            );
            ctx.error(&binds[j].2, msg);
        }
    }
}
