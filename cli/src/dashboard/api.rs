//! The dashboard's HTTP surface: the page and its script and style (compiled
//! in), and the JSON API the page, `mesh stat` and `mesh trace` read.

use axum::{
    Json, Router,
    extract::{Query, State},
    http::header,
    response::IntoResponse,
    routing::get,
};

use super::{Board, golden::Stat, logs, state::WorkloadRow};

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
