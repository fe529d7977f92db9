//! CPU cost of the active health checker at scale.
//!
//! 1,000 targets on loopback, each checked over HTTP every second (a new
//! connection per check, as ALB does). The upstreams run in a child
//! process, so the CPU time this process reports (/proc/self/stat) is the
//! checker's alone. Goal (issue: health checks): under 5% of one core.
//!
//!     cargo bench -p switchyard-benches --bench health_checks
//!
//! Environment: TARGETS (default 1000), SECONDS (default 10).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn cpu_seconds() -> f64 {
    // utime + stime, fields 14 and 15, in clock ticks (USER_HZ = 100 on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Child mode: `n` tiny HTTP responders; prints their ports, one a line.
/// With `close`, each answer closes its connection (an upstream that does
/// not do keep-alive); otherwise connections are kept.
fn upstreams(n: usize, close: bool) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    rt.block_on(async move {
        let mut out = std::io::stdout().lock();
        for _ in 0..n {
            let l = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                Ok(l) => l,
                Err(e) => panic!("bind: {e}"),
            };
            let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
            let _ = writeln!(out, "{port}");
            tokio::spawn(async move {
                while let Ok((mut s, _)) = l.accept().await {
                    tokio::spawn(async move {
                        let mut buf = [0u8; 1024];
                        // One request per read is enough for this client.
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            let answer: &[u8] = if close {
                                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            } else {
                                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                            };
                            if s.write_all(answer).await.is_err() || close {
                                break;
                            }
                        }
                    });
                }
            });
        }
        let _ = writeln!(out, "ready");
        drop(out);
        // Until the parent closes our stdin.
        let _ = tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            let _ = std::io::stdin().read_line(&mut s);
        })
        .await;
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--upstreams") {
        let n = args.get(i + 1).and_then(|x| x.parse().ok()).unwrap_or(1000);
        upstreams(n, args.iter().any(|a| a == "--close"));
        return;
    }
    for close in [false, true] {
        measure(close);
    }
}

fn measure(close: bool) {
    let n: usize = std::env::var("TARGETS")
        .ok()
        .and_then(|x| x.parse().ok())
        .unwrap_or(1000);
    let secs: u64 = std::env::var("SECONDS")
        .ok()
        .and_then(|x| x.parse().ok())
        .unwrap_or(10);
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => panic!("current_exe: {e}"),
    };
    let mut child = match Command::new(exe)
        .args([
            "--upstreams",
            &n.to_string(),
            if close { "--close" } else { "--keep" },
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("spawn upstreams: {e}"),
    };
    let mut ports = Vec::with_capacity(n);
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line == "ready" {
                break;
            }
            if let Ok(p) = line.parse::<u16>() {
                ports.push(p);
            }
        }
    }
    let mut yaml = String::from("admin: { bind: \"127.0.0.1:0\" }\ntarget_groups:\n");
    for (gi, chunk) in ports.chunks(100).enumerate() {
        yaml.push_str(&format!(
            "  - name: g{gi}\n    health_check: {{ path: /health, interval: 1s, timeout: 500ms }}\n    targets:\n"
        ));
        for p in chunk {
            yaml.push_str(&format!("      - {{ address: \"127.0.0.1:{p}\" }}\n"));
        }
    }
    let loaded = match switchyard_config::parse_str(&yaml, "bench.yaml", std::path::Path::new("."))
    {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    let snap = match switchyard_routing::Snapshot::compile(loaded.config, None) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    // One worker thread, as a sidecar would run.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    let checks = rt.block_on(async {
        let hc = switchyard_health::HealthChecks::new();
        hc.sync(&snap);
        // Warm-up: first round, connections, allocations.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let (cpu, wall) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
        let healthy = snap
            .groups
            .iter()
            .flat_map(|g| &g.targets)
            .filter(|t| t.state() == switchyard_routing::TargetState::Healthy)
            .count();
        hc.stop_all();
        (cpu, wall, healthy)
    });
    drop(child.stdin.take());
    let _ = child.wait();
    let (cpu, wall, healthy) = checks;
    let rate = ports.len() as f64; // one check per target per second
    println!(
        "health_checks ({}): {} targets, {healthy} healthy, ~{rate:.0} checks/s for {wall:.1}s: \
         {:.2}% of one core ({:.1} us CPU per check)",
        if close {
            "upstreams close each connection"
        } else {
            "keep-alive upstreams"
        },
        ports.len(),
        100.0 * cpu / wall,
        1e6 * cpu / (rate * wall)
    );
}
