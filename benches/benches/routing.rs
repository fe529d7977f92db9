//! Hot-path micro benches. Each guards a decision of STYLE.md habit 5:
//! - `route_match/*`: routes are compiled matchers compared without
//!   allocating (case-insensitive host compare in place, port stripped by
//!   slicing). Worst case = the catch-all after 99 non-matching routes.
//! - `group_split`: the weighted split is one relaxed fetch_add into a
//!   precomputed smooth-WRR table, no lock.
//! - `target_pick/*`: per-algorithm picking over 10 healthy targets; state
//!   checks are one atomic load each.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use switchyard_benches::snapshot;
use switchyard_routing::{Action, PickInput, RequestInfo};

fn route_match(c: &mut Criterion) {
    let s = snapshot(100, 10, 2, "round_robin");
    let table = &s.listeners[0];
    let headers = HeaderMap::new();
    let mut g = c.benchmark_group("route_match");
    g.bench_function("100_routes_first", |b| {
        let req = RequestInfo {
            host: Some("svc0.example.com:8080"),
            path: "/api/v0/users",
            method: &Method::GET,
            headers: &headers,
        };
        b.iter(|| black_box(table.route(black_box(&req)).map(|r| r.name.len())))
    });
    g.bench_function("100_routes_middle", |b| {
        let req = RequestInfo {
            host: Some("SVC50.example.com"),
            path: "/api/v50/users",
            method: &Method::GET,
            headers: &headers,
        };
        b.iter(|| black_box(table.route(black_box(&req)).map(|r| r.name.len())))
    });
    g.bench_function("100_routes_catch_all", |b| {
        let req = RequestInfo {
            host: Some("unknown.example.org"),
            path: "/",
            method: &Method::GET,
            headers: &headers,
        };
        b.iter(|| black_box(table.route(black_box(&req)).map(|r| r.name.len())))
    });
    g.finish();
}

fn group_split(c: &mut Criterion) {
    let s = snapshot(1, 2, 2, "round_robin");
    let Some(route) = s.listeners[0].routes.last() else {
        return;
    };
    let Action::Forward(split) = &route.action else {
        return;
    };
    c.bench_function("group_split_95_5", |b| b.iter(|| black_box(split.choose())));
}

fn target_pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("target_pick");
    for balance in ["round_robin", "least_request", "random"] {
        let s = snapshot(1, 1, 10, balance);
        g.bench_function(format!("{balance}_10"), |b| {
            b.iter(|| black_box(s.pick(0, PickInput::default(), &[]).map(|(g, _)| g)))
        });
    }
    let s = snapshot(1, 1, 10, "consistent_hash");
    let mut headers = HeaderMap::new();
    headers.insert("x-user", HeaderValue::from_static("user-12345"));
    g.bench_function("consistent_hash_10", |b| {
        let input = PickInput {
            headers: Some(&headers),
            client_ip: None,
        };
        b.iter(|| black_box(s.pick(0, black_box(input), &[]).map(|(g, _)| g)))
    });
    let s = snapshot(1, 1, 1000, "round_robin");
    g.bench_function("round_robin_1000", |b| {
        b.iter(|| black_box(s.pick(0, PickInput::default(), &[]).map(|(g, _)| g)))
    });
    g.finish();
}

criterion_group!(benches, route_match, group_split, target_pick);
criterion_main!(benches);
