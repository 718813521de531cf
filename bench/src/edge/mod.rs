//! The edge benchmark (`meshwork-bench --edge`): what the gateway costs a
//! call, side by side with grpc-gateway (the reference REST-to-gRPC
//! transcoder, in front of the same mesh) and nginx (a JSON reverse proxy
//! with `proxy_cache` and `limit_req`, which transcodes nothing), in one run
//! against one canned backend (`backend`).
//!
//! Each case is one edge and one call (`calls`): a closed loop at
//! `--concurrency` (throughput, CPU per call), then an open loop at `--rate`
//! (latency without coordinated omission). The edge's processes are read
//! from /proc around each (`procstat`). The Meshwork gateway runs under
//! `mesh up` once per traffic policy (`meshwork::Policy`); grpc-gateway is
//! built from Debian's Go packages (`peers`). `report` makes the table and
//! judges the targets.

mod backend;
mod calls;
mod meshwork;
mod peers;
mod report;

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};

pub use report::{Call, Edge, EdgeReport, Row, Usage};

use self::{
    backend::Backend,
    calls::{GrpcGetProduct, Rest, RestCall},
    meshwork::{GatewayMesh, Policy},
    peers::NginxPorts,
};
use crate::{
    load::{self, Caller, LoadResult},
    machine::Machine,
    procstat::{self, ProcSample, Scope},
    scenario::{free_ports, http_get},
};

/// What the edge benchmark runs.
#[derive(Debug, Clone)]
pub struct EdgePlan {
    pub duration: Duration,
    pub warmup: Duration,
    pub concurrency: usize,
    pub rate: u32,
    /// The `mesh` binary (`mesh up`, the gateway, the sidecars).
    pub mesh: PathBuf,
    pub nginx: Option<PathBuf>,
    pub nginx_workers: usize,
}

/// A process of an edge whose CPU and memory are read.
#[derive(Debug, Clone)]
pub struct Measured {
    pub role: &'static str,
    pub pid: u32,
    pub scope: Scope,
}

/// Runs every case of `plan`, printing progress to stderr.
pub async fn run(plan: &EdgePlan) -> Result<EdgeReport> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let backend = Backend::start(cpus)?;
    let mut report = EdgeReport {
        machine: Machine::detect(),
        settings: format!(
            "closed loop ×{} then {}/s open loop per case, {} each after {} of warm-up; REST over HTTP/1.1 \
             keep-alive, gRPC over one HTTP/2 connection; nginx with {} worker(s), grpc-gateway with GOMAXPROCS={cpus}",
            plan.concurrency,
            plan.rate,
            humantime::format_duration(plan.duration),
            humantime::format_duration(plan.warmup),
            plan.nginx_workers,
        ),
        rows: Vec::new(),
        skipped: Vec::new(),
        targets: Vec::new(),
    };

    let grpc = [GrpcGetProduct::connect(backend.grpc).await?];
    report
        .rows
        .push(case(plan, Edge::Backend, Call::GrpcGet, &grpc, &[]).await);
    let json = [RestCall::new(backend.json, Rest::GetProduct)?];
    report
        .rows
        .push(case(plan, Edge::Backend, Call::RestGet, &json, &[]).await);

    for policy in [
        Policy::Plain,
        Policy::Cache,
        Policy::CacheMemoryLimit,
        Policy::CacheRedisLimit,
    ] {
        let mesh = GatewayMesh::start(&plan.mesh, backend.grpc, policy)
            .await
            .with_context(|| format!("starting the gateway ({policy:?})"))?;
        eprintln!("meshwork gateway, {policy:?}");
        let rest = |rest| RestCall::new(mesh.listen, rest).map(|call| [call]);
        let m = &mesh.measured;
        match policy {
            Policy::Plain => {
                report
                    .rows
                    .push(case(plan, Edge::Meshwork, Call::RestGet, &rest(Rest::GetProduct)?, m).await);
                let grpc = [GrpcGetProduct::connect(mesh.listen).await?];
                report
                    .rows
                    .push(case(plan, Edge::Meshwork, Call::GrpcGet, &grpc, m).await);
                report
                    .rows
                    .push(case(plan, Edge::Meshwork, Call::RestPost, &rest(Rest::Register)?, m).await);
                grpc_gateway(plan, &mesh, &mut report).await;
            }
            Policy::Cache => {
                let miss = rest(Rest::GetProductNoCache)?;
                report
                    .rows
                    .push(case(plan, Edge::Meshwork, Call::RestMiss, &miss, m).await);
                report
                    .rows
                    .push(case(plan, Edge::Meshwork, Call::RestHit, &rest(Rest::GetProduct)?, m).await);
                let grpc = [GrpcGetProduct::connect(mesh.listen).await?];
                report
                    .rows
                    .push(case(plan, Edge::Meshwork, Call::GrpcHit, &grpc, m).await);
            }
            Policy::CacheMemoryLimit => {
                let hit = rest(Rest::GetProduct)?;
                report
                    .rows
                    .push(case(plan, Edge::Meshwork, Call::RestHitMemoryLimit, &hit, m).await);
            }
            Policy::CacheRedisLimit => {
                let hit = rest(Rest::GetProduct)?;
                report
                    .rows
                    .push(case(plan, Edge::Meshwork, Call::RestHitRedisLimit, &hit, m).await);
            }
        }
    }

    match &plan.nginx {
        Some(bin) => nginx(plan, bin, &backend, &mut report).await?,
        None => report.skipped.push((
            Edge::Nginx,
            "nginx is not installed (Debian: apt-get install nginx)".into(),
        )),
    }
    report.targets = report::check_targets(&report);
    Ok(report)
}

/// grpc-gateway in front of the gateway mesh's sidecar: the same path as
/// the Meshwork gateway's, with the other transcoder.
async fn grpc_gateway(plan: &EdgePlan, mesh: &GatewayMesh, report: &mut EdgeReport) {
    let started = async {
        let dir = tempfile::Builder::new()
            .prefix("meshwork-bench-grpc-gateway-")
            .tempdir()?;
        let binary = peers::build_grpc_gateway(dir.path()).await?;
        let [listen] = free_ports()?;
        let child = peers::start_grpc_gateway(&binary, listen, mesh.sidecar_outbound, &dir.path().join("log"))?;
        wait_for_product(listen).await?;
        anyhow::Ok((dir, listen, child))
    };
    let (_dir, listen, child) = match started.await {
        Ok(started) => started,
        Err(error) => {
            eprintln!("grpc-gateway: skipped: {error:#}");
            report.skipped.push((Edge::GrpcGateway, format!("{error:#}")));
            return;
        }
    };
    let mut measured = vec![Measured {
        role: "grpc-gateway",
        pid: child.pid(),
        scope: Scope::Tree,
    }];
    // Its path: the same two sidecars (not the Meshwork gateway, idle meanwhile).
    measured.extend(mesh.measured.iter().filter(|m| m.role.ends_with("sidecar")).cloned());
    for (call, rest) in [(Call::RestGet, Rest::GetProduct), (Call::RestPost, Rest::Register)] {
        match RestCall::new(listen, rest) {
            Ok(caller) => report
                .rows
                .push(case(plan, Edge::GrpcGateway, call, &[caller], &measured).await),
            Err(error) => report.skipped.push((Edge::GrpcGateway, format!("{error:#}"))),
        }
    }
}

async fn nginx(plan: &EdgePlan, bin: &std::path::Path, backend: &Backend, report: &mut EdgeReport) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("meshwork-bench-nginx-edge-")
        .tempdir()?;
    let [plain, cache, cache_limited] = free_ports()?;
    let ports = NginxPorts {
        plain,
        cache,
        cache_limited,
    };
    let child = peers::start_nginx(bin, plan.nginx_workers, backend.json, &ports, dir.path())?;
    for port in [plain, cache, cache_limited] {
        wait_for_product(port).await?;
    }
    eprintln!("nginx");
    let measured = [Measured {
        role: "nginx",
        pid: child.pid(),
        scope: Scope::Tree,
    }];
    for (call, addr, rest) in [
        (Call::RestGet, plain, Rest::GetProduct),
        (Call::RestHit, cache, Rest::GetProduct),
        (Call::RestHitLimitReq, cache_limited, Rest::GetProduct),
        (Call::RestPost, plain, Rest::Register),
    ] {
        let caller = [RestCall::new(addr, rest)?];
        report
            .rows
            .push(case(plan, Edge::Nginx, call, &caller, &measured).await);
    }
    drop(child);
    Ok(())
}

/// Until `GET /v1/products/book-ddia` on `addr` is answered 200 (30 s at most).
async fn wait_for_product(addr: std::net::SocketAddr) -> Result<()> {
    let path = format!("/v1/products/{}", backend::PRODUCT_ID);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match http_get(addr, &path).await {
            Ok((200, _)) => return Ok(()),
            answer if tokio::time::Instant::now() >= deadline => {
                anyhow::bail!("GET {path} on {addr} after 30 s: {answer:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// One case: warm-up, the closed loop, warm-up, the open loop.
async fn case<C: Caller>(plan: &EdgePlan, edge: Edge, call: Call, callers: &[C], measured: &[Measured]) -> Row {
    load::closed_loop(callers, plan.concurrency, plan.warmup).await;
    let (closed, closed_usage) = measure(measured, load::closed_loop(callers, plan.concurrency, plan.duration)).await;
    load::open_loop(callers, plan.rate, plan.warmup).await;
    let (open, open_usage) = measure(measured, load::open_loop(callers, plan.rate, plan.duration)).await;
    let row = Row {
        edge,
        call,
        closed,
        open,
        closed_usage,
        open_usage,
    };
    eprintln!("  {}", row.summary());
    row
}

/// Runs `load`, reading every measured process before and after.
async fn measure(measured: &[Measured], load: impl Future<Output = LoadResult>) -> (LoadResult, Vec<Usage>) {
    let read =
        || -> Vec<Option<ProcSample>> { measured.iter().map(|m| procstat::sample(m.pid, m.scope).ok()).collect() };
    for m in measured {
        procstat::reset_peak(m.pid);
    }
    let before = read();
    let result = load.await;
    let after = read();
    let usage = measured
        .iter()
        .zip(before.into_iter().zip(after))
        .map(|(m, pair)| match pair {
            (Some(before), Some(after)) if result.calls > 0 => Usage {
                role: m.role,
                cpu_per_call: Some(
                    after.cpu.saturating_sub(before.cpu) / u32::try_from(result.calls).unwrap_or(u32::MAX),
                ),
                peak_rss: Some(after.peak_rss),
            },
            _ => Usage {
                role: m.role,
                cpu_per_call: None,
                peak_rss: None,
            },
        })
        .collect();
    (result, usage)
}
