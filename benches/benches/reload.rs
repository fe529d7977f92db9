//! Reload cost with 1,000 targets, and whether it stalls the data plane.
//!
//! Writes a config with 10 groups of 100 targets (checks off, so nothing
//! touches the network), starts `switchyard_control::Control` from it, then
//! rewrites the weights and reloads 30 times through exactly the path
//! `POST /api/v1/reload` takes (read, validate, compile, swap, drain diff).
//! Meanwhile another thread loads the published snapshot and picks a target
//! in a tight loop, recording its slowest pick: a reload must never make a
//! request wait. Goal (issue: live configuration): reload < 50 ms.
//!
//!     cargo bench -p switchyard-benches --bench reload

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_routing::PickInput;

fn config(flip: bool) -> String {
    let mut y = String::from("admin: { bind: \"127.0.0.1:0\" }\nlisteners: []\ntarget_groups:\n");
    for g in 0..10 {
        y.push_str(&format!(
            "  - name: g{g}\n    health_check: {{ protocol: none }}\n    targets:\n"
        ));
        for t in 0..100 {
            let w = if flip { 1 + (t % 7) } else { 1 + (t % 3) };
            y.push_str(&format!(
                "      - {{ address: \"10.0.{g}.{t}:80\", weight: {w} }}\n"
            ));
        }
    }
    y
}

fn main() {
    let dir = std::env::temp_dir().join(format!("switchyard-reload-bench-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("temp dir: {e}");
    }
    let path = dir.join("bench.yaml");
    let write = |flip: bool| {
        if let Err(e) = std::fs::write(&path, config(flip)) {
            panic!("write: {e}");
        }
    };
    write(false);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    let (times, worst_pick, picks) = rt.block_on(async {
        let loaded = match switchyard_config::load_file(&path) {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        let control = match switchyard_control::Control::start(
            loaded.config,
            loaded.version,
            Some(path.clone()),
            Some(&loaded.source),
            switchyard_proxy::AccessLog::disabled(),
        )
        .await
        {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let worst = Arc::new(AtomicU64::new(0));
        let count = Arc::new(AtomicU64::new(0));
        let picker = {
            let (snap, stop, worst, count) = (
                Arc::clone(&control.snapshot),
                Arc::clone(&stop),
                Arc::clone(&worst),
                Arc::clone(&count),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let s = snap.load();
                    let _ = std::hint::black_box(s.pick(3, PickInput::default(), &[]));
                    worst.fetch_max(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        // Baseline: the same picking with no reload, for as long as the
        // reloads will take, to tell scheduler noise from stalls.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let baseline = Duration::from_nanos(worst.swap(0, Ordering::Relaxed));
        let mut times = Vec::new();
        for i in 0..30 {
            write(i % 2 == 0);
            let t0 = Instant::now();
            if let Err(e) = control.reload().await {
                panic!("reload failed: {e}");
            }
            times.push(t0.elapsed());
        }
        stop.store(true, Ordering::Relaxed);
        let _ = picker.join();
        (
            times,
            Duration::from_nanos(worst.load(Ordering::Relaxed)),
            (count.load(Ordering::Relaxed), baseline),
        )
    });
    let (picks, baseline) = picks;
    let _ = std::fs::remove_dir_all(&dir);
    let mut sorted = times.clone();
    sorted.sort();
    println!(
        "reload of 1000 targets (10 groups x 100): median {:?}, max {:?} over {} reloads; \
         concurrent picks: {picks}, slowest {:?} (slowest with no reload running: {:?})",
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
        sorted.len(),
        worst_pick,
        baseline
    );
}
