//! `--collector`: an OTLP/gRPC span sink the sidecars export to, as they
//! would to Jaeger, so that their CPU includes encoding and sending spans.
//! Without it they export to the default endpoint, where normally nothing
//! listens, and each batch fails after it is converted. The sink keeps only
//! a count; it runs on its own runtime, like the echo server.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::{Context, Result};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use tokio_stream::wrappers::TcpListenerStream;

use crate::background::Background;

pub struct Collector {
    pub addr: SocketAddr,
    spans: Arc<AtomicU64>,
    _runtime: Background,
}

impl Collector {
    /// Starts listening on a port the OS picks.
    pub fn start() -> Result<Collector> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the span collector")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let spans = Arc::new(AtomicU64::new(0));
        let runtime = Background::new("bench-collector", 1)?;
        let handle = runtime.handle().context("collector runtime")?;
        let sink = Sink(spans.clone());
        handle.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => listener,
                Err(error) => {
                    eprintln!("span collector: {error}");
                    return;
                }
            };
            let served = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(sink))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
            if let Err(error) = served {
                eprintln!("span collector: {error}");
            }
        });
        Ok(Collector {
            addr,
            spans,
            _runtime: runtime,
        })
    }

    /// Where the sidecars send spans (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Spans received so far.
    pub fn spans(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }
}

struct Sink(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .map(|scope| scope.spans.len())
            .sum();
        self.0
            .fetch_add(u64::try_from(spans).unwrap_or(u64::MAX), Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        collector::trace::v1::trace_service_client::TraceServiceClient,
        trace::v1::{ResourceSpans, ScopeSpans, Span},
    };

    use super::*;

    #[tokio::test]
    async fn counts_the_spans_it_is_sent() {
        let collector = Collector::start().expect("collector");
        let mut client = TraceServiceClient::connect(collector.endpoint())
            .await
            .expect("connects");
        let scope = |spans: usize| ScopeSpans {
            spans: vec![Span::default(); spans],
            ..ScopeSpans::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    scope_spans: vec![scope(2), scope(3)],
                    ..ResourceSpans::default()
                },
                ResourceSpans {
                    scope_spans: vec![scope(1)],
                    ..ResourceSpans::default()
                },
            ],
        };
        client.export(request.clone()).await.expect("accepted");
        client.export(request).await.expect("accepted");
        assert_eq!(collector.spans(), 12);
    }
}
