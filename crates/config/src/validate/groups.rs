//! Target groups: targets, balance and hash_on, protocol-dependent keys,
//! and failover references and cycles across groups.

use std::collections::HashMap;

use crate::model::{
    Address, Balance, GroupProtocol, HashOn, ProxyProtocol, TargetGroup, TargetSpec,
};
use crate::raw::{RawBalance, RawTarget, RawTargetGroup};

use super::fields::{parse_address, parse_hash_on};
use super::forward::stickiness;
use super::group_parts::{health_check, limits, outlier_detection, retries, timeouts};
use super::{dur, group_protocol, group_protocol_name, Ctx, GroupIndex};

pub(crate) const MAX_TARGET_WEIGHT: u32 = 1000;

pub(crate) fn validate_groups(
    ctx: &mut Ctx<'_>,
    raws: &[RawTargetGroup],
    index: &GroupIndex,
) -> Vec<TargetGroup> {
    let groups = raws
        .iter()
        .enumerate()
        .map(|(i, raw)| group(ctx, raw, &format!("target_groups.{i}"), index))
        .collect();
    let names: Vec<(String, String)> = raws
        .iter()
        .enumerate()
        .map(|(i, g)| (g.name.clone(), format!("target_groups.{i}.name")))
        .collect();
    ctx.check_duplicates(&names, "", "target group name");
    check_failover_cycles(ctx, raws);
    groups
}

fn group(ctx: &mut Ctx<'_>, raw: &RawTargetGroup, p: &str, index: &GroupIndex) -> TargetGroup {
    if raw.name.is_empty() {
        ctx.error(
            &format!("{p}.name"),
            "target group name must not be empty".to_string(),
        );
    }
    let owner = format!("target group \"{}\"", raw.name);
    let protocol = group_protocol(raw.protocol);
    let tcp = protocol == GroupProtocol::Tcp;

    let balance = balance(ctx, raw, p, &owner, tcp);
    let targets = targets(ctx, raw.targets.as_deref().unwrap_or_default(), p, &owner);
    let health_check = health_check(
        ctx,
        raw.health_check.as_ref(),
        &format!("{p}.health_check"),
        &owner,
        protocol,
    );
    let outlier_detection = raw
        .outlier_detection
        .as_ref()
        .map(|o| outlier_detection(ctx, o, &format!("{p}.outlier_detection"), &owner));

    if let Some(to) = &raw.failover {
        check_failover(ctx, raw, to, p, &owner, protocol, index);
    }

    let stickiness = raw.stickiness.as_ref().and_then(|s| {
        if tcp {
            ctx.error(
                &format!("{p}.stickiness"),
                format!("{owner}: stickiness does not apply to a tcp group"),
            );
            None
        } else {
            Some(stickiness(
                ctx,
                s,
                &format!("{p}.stickiness"),
                &owner,
                "SWYD",
            ))
        }
    });

    let proxy_protocol = raw.proxy_protocol.map(|_| {
        if !tcp {
            ctx.error(
                &format!("{p}.proxy_protocol"),
                format!(
                    "{owner}: proxy_protocol does not apply to a {} group; tcp groups only",
                    group_protocol_name(protocol)
                ),
            );
        }
        ProxyProtocol::V2
    });

    // A tcp group's connections have no request to time and no pool to
    // idle in: only `connect` applies.
    if let (true, Some(t)) = (tcp, raw.timeouts.as_ref()) {
        for (key, given) in [("request", t.request.is_some()), ("idle", t.idle.is_some())] {
            if given {
                ctx.error(
                    &format!("{p}.timeouts.{key}"),
                    format!("{owner}: timeouts.{key} does not apply to a tcp group; only connect does (the listener's idle timeout bounds a connection)"),
                );
            }
        }
    }

    TargetGroup {
        name: raw.name.clone(),
        protocol,
        balance,
        targets,
        health_check,
        outlier_detection,
        deregistration_delay: dur(raw.deregistration_delay, 30_000),
        slow_start: dur(raw.slow_start, 0),
        fail_open: raw.fail_open.unwrap_or(true),
        failover: raw.failover.clone(),
        stickiness,
        retries: retries(
            ctx,
            raw.retries.as_ref(),
            &format!("{p}.retries"),
            &owner,
            tcp,
        ),
        timeouts: timeouts(raw.timeouts.as_ref()),
        limits: limits(ctx, raw.limits.as_ref(), &format!("{p}.limits"), &owner),
        proxy_protocol,
    }
}

fn balance(ctx: &mut Ctx<'_>, raw: &RawTargetGroup, p: &str, owner: &str, tcp: bool) -> Balance {
    match (raw.balance, &raw.hash_on) {
        (Some(RawBalance::ConsistentHash), Some(h)) => {
            let hash_on = parse_hash_on(h).unwrap_or_else(|e| {
                ctx.error(&format!("{p}.hash_on"), format!("{owner}: {e}"));
                HashOn::ClientIp
            });
            // A tcp connection has no headers or cookies to hash on.
            if tcp && hash_on != HashOn::ClientIp {
                ctx.error(
                    &format!("{p}.hash_on"),
                    format!(
                        "{owner}: hash_on \"{h}\" does not apply to a tcp group; use client_ip"
                    ),
                );
            }
            Balance::ConsistentHash(hash_on)
        }
        (Some(RawBalance::ConsistentHash), None) => {
            ctx.error(
                &format!("{p}.balance"),
                format!("{owner}: balance consistent_hash needs hash_on (header:NAME, cookie:NAME or client_ip)"),
            );
            Balance::ConsistentHash(HashOn::ClientIp)
        }
        (other, hash_on) => {
            if hash_on.is_some() {
                ctx.error(
                    &format!("{p}.hash_on"),
                    format!("{owner}: hash_on applies only with balance: consistent_hash"),
                );
            }
            match other {
                None | Some(RawBalance::RoundRobin) => Balance::RoundRobin,
                Some(RawBalance::LeastRequest) => Balance::LeastRequest,
                Some(RawBalance::Random) => Balance::Random,
                Some(RawBalance::ConsistentHash) => Balance::ConsistentHash(HashOn::ClientIp),
            }
        }
    }
}

fn targets(ctx: &mut Ctx<'_>, raws: &[RawTarget], p: &str, owner: &str) -> Vec<TargetSpec> {
    let mut out = Vec::new();
    let mut seen: Vec<(String, String)> = Vec::new();
    for (k, t) in raws.iter().enumerate() {
        let at = format!("{p}.targets.{k}");
        let address = match parse_address(&t.address, 1) {
            Ok(a) => {
                seen.push((a.to_string(), format!("{at}.address")));
                a
            }
            Err(e) => {
                ctx.error(
                    &format!("{at}.address"),
                    format!("{owner}: invalid target address \"{}\": {e}", t.address),
                );
                Address {
                    host: String::new(),
                    port: 0,
                }
            }
        };
        let weight = t.weight.unwrap_or(1);
        if !(1..=MAX_TARGET_WEIGHT).contains(&weight) {
            ctx.error(
                &format!("{at}.weight"),
                format!(
                    "{owner}: target {} weight {weight} is out of range 1..={MAX_TARGET_WEIGHT}",
                    t.address
                ),
            );
        }
        out.push(TargetSpec { address, weight });
    }
    ctx.check_duplicates(&seen, &format!("{owner}: "), "target");
    out
}

fn check_failover(
    ctx: &mut Ctx<'_>,
    raw: &RawTargetGroup,
    to: &str,
    p: &str,
    owner: &str,
    protocol: GroupProtocol,
    index: &GroupIndex,
) {
    let at = format!("{p}.failover");
    if to == raw.name {
        ctx.error(&at, format!("{owner} fails over to itself"));
        return;
    }
    match index.protocol(to) {
        None => ctx.error(
            &at,
            format!("{owner}: failover to unknown target group \"{to}\""),
        ),
        // Failover hands the same requests or connections to the other
        // group, so it must speak the same layer.
        Some(other) if (other == GroupProtocol::Tcp) != (protocol == GroupProtocol::Tcp) => ctx
            .error(
                &at,
                format!(
                    "{owner}: failover target group \"{to}\" is a {} group, but this is a {} group",
                    group_protocol_name(other),
                    group_protocol_name(protocol)
                ),
            ),
        Some(_) => {}
    }
}

/// Reports each failover cycle of two or more groups once, at the
/// `failover` key of its first group in the file. Self-loops are reported
/// by `check_failover`.
fn check_failover_cycles(ctx: &mut Ctx<'_>, raws: &[RawTargetGroup]) {
    let mut next: HashMap<&str, (&str, usize)> = HashMap::new();
    for (i, g) in raws.iter().enumerate() {
        if let Some(to) = &g.failover {
            next.entry(g.name.as_str()).or_insert((to.as_str(), i));
        }
    }
    let mut reported: Vec<&str> = Vec::new();
    for g in raws {
        let start = g.name.as_str();
        if reported.contains(&start) {
            continue;
        }
        let Some(&(mut cur, i)) = next.get(start) else {
            continue;
        };
        let mut chain = vec![start];
        loop {
            if cur == start {
                if chain.len() > 1 {
                    chain.push(start);
                    ctx.error(
                        &format!("target_groups.{i}.failover"),
                        format!(
                            "target group \"{start}\": failover cycle {}",
                            chain.join(" -> ")
                        ),
                    );
                    reported.extend(chain.iter().copied());
                }
                break;
            }
            // A cycle further down the chain that does not include `start`
            // is reported when its own first group comes up.
            if chain.contains(&cur) {
                break;
            }
            chain.push(cur);
            match next.get(cur) {
                Some(&(to, _)) => cur = to,
                None => break,
            }
        }
    }
}
