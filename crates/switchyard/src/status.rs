//! `switchyard status`: the admin API's target table, for humans.

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// GETs `path` from the admin API at `admin` and returns the body.
pub async fn admin_get(admin: &str, path: &str) -> anyhow::Result<String> {
    let stream = tokio::time::timeout(std::time::Duration::from_secs(5), TcpStream::connect(admin))
        .await
        .map_err(|_| anyhow!("timed out connecting to the admin API at {admin}"))?
        .with_context(|| format!("cannot reach the admin API at {admin}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, admin)
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        bail!("admin API answered {status}: {}", text.trim());
    }
    Ok(text)
}

/// Renders `/api/v1/target-groups` JSON as an aligned table.
pub fn table(json: &str) -> anyhow::Result<String> {
    let v: serde_json::Value = serde_json::from_str(json).context("admin API sent invalid JSON")?;
    let mut rows = vec![[
        "GROUP".to_owned(),
        "TARGET".to_owned(),
        "STATE".to_owned(),
        "WEIGHT".to_owned(),
        "IN-FLIGHT".to_owned(),
    ]];
    let groups = v["target_groups"].as_array().cloned().unwrap_or_default();
    for g in &groups {
        let name = g["name"].as_str().unwrap_or("?");
        let targets = g["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            rows.push([
                name.to_owned(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for t in &targets {
            let mut state = t["state"].as_str().unwrap_or("?").to_owned();
            if let Some(reason) = t["reason"].as_str() {
                state = format!("{state} ({reason})");
            }
            rows.push([
                name.to_owned(),
                t["address"].as_str().unwrap_or("?").to_owned(),
                state,
                t["weight"].to_string(),
                t["in_flight"].to_string(),
            ]);
        }
    }
    let mut widths = [0usize; 5];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_a_table() {
        let t = super::table(
            r#"{"target_groups":[{"name":"web","targets":[{"address":"127.0.0.1:1","weight":1,"state":"healthy","reason":null,"in_flight":0}]},{"name":"empty","targets":[]}]}"#,
        )
        .unwrap();
        assert!(t.starts_with("GROUP"));
        assert!(t.contains("web    127.0.0.1:1  healthy  1       0"), "{t}");
        assert!(t.contains("empty"));
    }
}
