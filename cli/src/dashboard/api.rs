//! The dashboard's HTTP surface: the page and its script and style (compiled
//! in), and the JSON API the page, `mesh stat` and `mesh trace` read.

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use super::{Board, golden::Stat, logs, state::WorkloadRow, traces};

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

pub fn router(board: Board) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT) }),
        )
        .route(
            "/style.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE) }),
        )
        .route("/api/workloads", get(workloads))
        .route("/api/stat", get(stat))
        .route("/api/logs", get(search_logs))
        .route("/api/traces", get(list_traces))
        .route("/api/traces/{id}", get(one_trace))
        .with_state(board)
}

async fn workloads(State(board): State<Board>) -> Json<Vec<WorkloadRow>> {
    Json(board.workloads())
}

async fn stat(State(board): State<Board>) -> Json<Stat> {
    Json(board.stat())
}

async fn search_logs(Query(query): Query<logs::Query>) -> impl IntoResponse {
    Json(logs::search(&query))
}

#[derive(serde::Serialize)]
struct TraceList {
    /// The configured collector, when spans go there rather than here.
    collector: Option<String>,
    /// Its web page, when it looks like Jaeger's OTLP port (4317 → 16686).
    collector_ui: Option<String>,
    /// How many traces are kept at most.
    kept: usize,
    traces: Vec<traces::Summary>,
}

async fn list_traces(State(board): State<Board>) -> Json<TraceList> {
    let collector = board.collector();
    let collector_ui = collector
        .as_deref()
        .and_then(|c| c.strip_suffix(":4317"))
        .map(|host| format!("{host}:16686"));
    Json(TraceList {
        collector,
        collector_ui,
        kept: traces::KEPT_TRACES,
        traces: board.traces.list(),
    })
}

async fn one_trace(State(board): State<Board>, Path(id): Path<String>) -> Result<Json<traces::Trace>, StatusCode> {
    board.traces.get(&id).map(Json).ok_or(StatusCode::NOT_FOUND)
}
