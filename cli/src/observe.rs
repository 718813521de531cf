//! `mesh stat` and `mesh trace`: the dashboard's figures in the terminal, for
//! scripts and SSH sessions, read from the JSON API of a running `mesh up`.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::Value;

#[derive(clap::Args)]
pub struct StatArgs {
    /// The dashboard of the running `mesh up` (it prints its address).
    #[arg(long, default_value = "127.0.0.1:7500", env = "MESH_DASHBOARD")]
    dashboard: SocketAddr,
}

#[derive(clap::Args)]
pub struct TraceArgs {
    /// The trace id (32 hex digits), as listed on the dashboard.
    #[arg(required_unless_present = "last")]
    id: Option<String>,
    /// The trace that started last.
    #[arg(long, conflicts_with = "id")]
    last: bool,
    #[arg(long, default_value = "127.0.0.1:7500", env = "MESH_DASHBOARD")]
    dashboard: SocketAddr,
}

async fn get(dashboard: SocketAddr, path: &str) -> Result<Value> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri = format!("http://{dashboard}{path}")
        .parse()
        .with_context(|| format!("building the URL for {path}"))?;
    let response = client
        .get(uri)
        .await
        .with_context(|| format!("asking the dashboard at {dashboard} (is `mesh up` running?)"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading the dashboard's answer")?;
    if status == http::StatusCode::NOT_FOUND {
        bail!("the dashboard at {dashboard} has no {path}");
    }
    if !status.is_success() {
        bail!("the dashboard at {dashboard} answered {status} to {path}");
    }
    serde_json::from_slice(&body.to_bytes()).with_context(|| format!("reading the dashboard's JSON for {path}"))
}

fn pct(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |r| format!("{:.2}%", 100.0 * r))
}

fn ms(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |s| format!("{:.1}ms", 1e3 * s))
}

fn num(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |n| format!("{n:.0}"))
}

pub async fn stat(args: StatArgs) -> Result<()> {
    let stat = get(args.dashboard, "/api/stat").await?;
    let window = stat["window_seconds"].as_f64().unwrap_or(0.0);
    println!("over the last {window:.0} s\n");
    println!(
        "{:<20} {:>9} {:>8} {:>10} {:>10} {:>10}",
        "SERVICE", "SUCCESS", "RPS", "P50", "P95", "P99"
    );
    for s in stat["services"].as_array().into_iter().flatten() {
        println!(
            "{:<20} {:>9} {:>8.2} {:>10} {:>10} {:>10}",
            s["name"].as_str().unwrap_or("?"),
            pct(&s["success_rate"]),
            s["rps"].as_f64().unwrap_or(0.0),
            ms(&s["p50"]),
            ms(&s["p95"]),
            ms(&s["p99"]),
        );
    }
    println!(
        "\n{:<20} {:>9} {:>8} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8}",
        "EDGE", "SUCCESS", "RPS", "P50", "P95", "P99", "RETRIES", "REFUSED", "EJECTED"
    );
    for e in stat["edges"].as_array().into_iter().flatten() {
        let edge = format!(
            "{} -> {}",
            e["from"].as_str().unwrap_or("?"),
            e["to"].as_str().unwrap_or("?")
        );
        println!(
            "{:<20} {:>9} {:>8.2} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8}",
            edge,
            pct(&e["success_rate"]),
            e["rps"].as_f64().unwrap_or(0.0),
            ms(&e["p50"]),
            ms(&e["p95"]),
            ms(&e["p99"]),
            num(&e["retries"]),
            num(&e["retries_refused"]),
            num(&e["ejections"]),
        );
    }
    Ok(())
}

pub async fn trace(args: TraceArgs) -> Result<()> {
    let id = match (&args.id, args.last) {
        (_, true) => "last".to_string(),
        (Some(id), false) if id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()) => id.clone(),
        (Some(id), false) => bail!("trace id '{id}': expected 32 hex digits"),
        (None, false) => bail!("give a trace id or --last"),
    };
    let trace = get(args.dashboard, &format!("/api/traces/{id}")).await?;
    let spans = trace["spans"].as_array().cloned().unwrap_or_default();
    let start = spans.iter().filter_map(|s| s["start_ns"].as_u64()).min().unwrap_or(0);
    println!(
        "trace {} ({} spans)",
        trace["trace_id"].as_str().unwrap_or("?"),
        spans.len()
    );
    for s in &spans {
        let (begin, end) = (s["start_ns"].as_u64().unwrap_or(0), s["end_ns"].as_u64().unwrap_or(0));
        let depth = s["depth"].as_u64().unwrap_or(0) as usize;
        let label = format!(
            "{}{} {}",
            "  ".repeat(depth),
            s["service"].as_str().unwrap_or("?"),
            s["name"].as_str().unwrap_or("?")
        );
        println!(
            "{label:<72} {:>9.2}ms  +{:.2}ms{}",
            end.saturating_sub(begin) as f64 / 1e6,
            begin.saturating_sub(start) as f64 / 1e6,
            if s["error"].as_bool() == Some(true) {
                "  ERROR"
            } else {
                ""
            }
        );
    }
    Ok(())
}
