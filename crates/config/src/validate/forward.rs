//! `forward:` (on routes and on tcp/tls listeners) and `stickiness:` (on
//! forwards and on groups): group references, weights, protocol fit.

use crate::model::{Forward, GroupProtocol, Stickiness, WeightedGroup};
use crate::raw::{RawForward, RawStickiness};

use super::fields::is_token;
use super::{dur, group_protocol_name, Ctx, GroupIndex};

/// Who is forwarding: an http route, or a tcp/tls listener (named by its
/// protocol), since each accepts only its own kind of group.
#[derive(Clone, Copy)]
pub(crate) enum Forwarder {
    HttpRoute,
    Listener(&'static str),
}

pub(crate) const MAX_GROUP_WEIGHT: u32 = 1000;

/// `p` is the path of the `forward` key; `owner` names the object, e.g.
/// `route "web"`.
pub(crate) fn forward(
    ctx: &mut Ctx<'_>,
    raw: &RawForward,
    p: &str,
    owner: &str,
    groups: &GroupIndex,
    from: Forwarder,
) -> Forward {
    // (name, weight, path of the name key)
    let mut entries: Vec<(String, u32, String)> = Vec::new();
    match (&raw.target_group, &raw.target_groups) {
        (Some(_), Some(_)) => ctx.error(
            &format!("{p}.target_groups"),
            format!("{owner}: forward has both target_group and target_groups; give one"),
        ),
        (None, None) => ctx.error(
            p,
            format!("{owner}: forward needs target_group or target_groups"),
        ),
        (Some(name), None) => entries.push((name.clone(), 1, format!("{p}.target_group"))),
        (None, Some(list)) => {
            if list.is_empty() {
                ctx.error(
                    &format!("{p}.target_groups"),
                    format!("{owner}: forward.target_groups is empty"),
                );
            }
            for (k, wg) in list.iter().enumerate() {
                let weight = wg.weight.unwrap_or(1);
                if weight > MAX_GROUP_WEIGHT {
                    ctx.error(
                        &format!("{p}.target_groups.{k}.weight"),
                        format!(
                            "{owner}: weight {weight} of target group \"{}\" is out of range 0..={MAX_GROUP_WEIGHT}",
                            wg.name
                        ),
                    );
                }
                entries.push((
                    wg.name.clone(),
                    weight,
                    format!("{p}.target_groups.{k}.name"),
                ));
            }
            if !list.is_empty() && entries.iter().all(|e| e.1 == 0) {
                ctx.error(
                    &format!("{p}.target_groups"),
                    format!(
                        "{owner}: every target group weight is 0; at least one must be above 0"
                    ),
                );
            }
            let keys: Vec<(String, String)> =
                entries.iter().map(|e| (e.0.clone(), e.2.clone())).collect();
            ctx.check_duplicates(&keys, &format!("{owner}: "), "forward target group");
        }
    }

    for (name, _, path) in &entries {
        check_reference(ctx, name, path, owner, groups, from);
    }

    let stickiness = raw.stickiness.as_ref().and_then(|s| match from {
        Forwarder::HttpRoute => Some(stickiness(
            ctx,
            s,
            &format!("{p}.stickiness"),
            owner,
            "SWYG",
        )),
        Forwarder::Listener(proto) => {
            ctx.error(
                &format!("{p}.stickiness"),
                format!("{owner}: stickiness does not apply to the forward of a {proto} listener"),
            );
            None
        }
    });

    Forward {
        target_groups: entries
            .into_iter()
            .map(|(name, weight, _)| WeightedGroup { name, weight })
            .collect(),
        stickiness,
    }
}

fn check_reference(
    ctx: &mut Ctx<'_>,
    name: &str,
    path: &str,
    owner: &str,
    groups: &GroupIndex,
    from: Forwarder,
) {
    let Some(protocol) = groups.protocol(name) else {
        ctx.error(
            path,
            format!("{owner} forwards to unknown target group \"{name}\""),
        );
        return;
    };
    match (from, protocol) {
        (Forwarder::HttpRoute, GroupProtocol::Tcp) => ctx.error(
            path,
            format!(
                "{owner} forwards to target group \"{name}\", a tcp group; http routes need http or http2 groups"
            ),
        ),
        (Forwarder::Listener(proto), GroupProtocol::Http | GroupProtocol::Http2) => ctx.error(
            path,
            format!(
                "{owner} forwards to target group \"{name}\", a {} group; {proto} listeners need tcp groups",
                group_protocol_name(protocol)
            ),
        ),
        _ => {}
    }
}

/// `p` is the path of the `stickiness` key. Default duration 1h.
pub(crate) fn stickiness(
    ctx: &mut Ctx<'_>,
    raw: &RawStickiness,
    p: &str,
    owner: &str,
    default_cookie: &str,
) -> Stickiness {
    let cookie = raw
        .cookie
        .clone()
        .unwrap_or_else(|| default_cookie.to_string());
    if !is_token(&cookie) {
        ctx.error(
            &format!("{p}.cookie"),
            format!("{owner}: stickiness cookie \"{cookie}\" is not a valid cookie name"),
        );
    }
    let duration = dur(raw.duration, 3_600_000);
    if duration.is_zero() {
        ctx.error(
            &format!("{p}.duration"),
            format!("{owner}: stickiness duration must be more than 0s"),
        );
    }
    Stickiness { cookie, duration }
}
