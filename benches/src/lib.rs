//! Shared fixtures for the benches: configs generated at a given size, so
//! every bench measures the same shapes the docs quote.

use std::fmt::Write;
use std::path::Path;

use switchyard_routing::Snapshot;

/// A config with one listener of `routes` host+path routes (the last one
/// a catch-all) over `groups` groups of `targets` targets each, all with
/// `health_check: none` so every target is healthy.
pub fn config_yaml(routes: usize, groups: usize, targets: usize, balance: &str) -> String {
    let mut y = String::from("admin: { bind: \"127.0.0.1:0\" }\nlisteners:\n  - name: l\n    bind: \"127.0.0.1:0\"\n    routes:\n");
    for r in 0..routes.saturating_sub(1) {
        let _ = writeln!(
            y,
            "      - {{ name: r{r}, match: {{ host: \"svc{r}.example.com\", path_prefix: /api/v{r}/ }}, forward: {{ target_group: g{} }} }}",
            r % groups
        );
    }
    if groups > 1 {
        y.push_str("      - name: all\n        forward:\n          target_groups: [ { name: g0, weight: 95 }, { name: g1, weight: 5 } ]\n");
    } else {
        y.push_str("      - name: all\n        forward: { target_group: g0 }\n");
    }
    y.push_str("target_groups:\n");
    for g in 0..groups {
        let _ = writeln!(
            y,
            "  - name: g{g}\n    balance: {balance}\n    health_check: {{ protocol: none }}"
        );
        if balance == "consistent_hash" {
            y.push_str("    hash_on: header:x-user\n");
        }
        y.push_str("    targets:\n");
        for t in 0..targets {
            let _ = writeln!(
                y,
                "      - {{ address: \"10.{}.{}.{}:80\" }}",
                g / 256,
                g % 256,
                t % 250
            );
        }
    }
    y
}

/// Compiles [`config_yaml`] through the real config and routing crates.
pub fn snapshot(routes: usize, groups: usize, targets: usize, balance: &str) -> Snapshot {
    let yaml = config_yaml(routes, groups, targets, balance);
    let loaded = match switchyard_config::parse_str(&yaml, "bench.yaml", Path::new(".")) {
        Ok(l) => l,
        Err(e) => panic!("bench config invalid: {e}"),
    };
    match Snapshot::compile(loaded.config, None) {
        Ok(s) => s,
        Err(e) => panic!("bench config does not compile: {e}"),
    }
}
