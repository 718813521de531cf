//! Readiness: ask a sidecar's admin port whether it is live or ready.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

/// An HTTP/1 client for the admin endpoints.
pub struct AdminProbe {
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl AdminProbe {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(1)));
        AdminProbe {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Whether `GET http://admin/path` answers 200.
    pub async fn ok(&self, admin: SocketAddr, path: &str) -> bool {
        let Ok(uri) = format!("http://{admin}{path}").parse::<http::Uri>() else {
            return false;
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), self.client.get(uri)).await,
            Ok(Ok(response)) if response.status().is_success()
        )
    }

    /// Polls until every address answers 200 on `path`.
    pub async fn wait_all(&self, admins: &[SocketAddr], path: &str) {
        for &admin in admins {
            while !self.ok(admin, path).await {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
