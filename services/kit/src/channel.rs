//! The one channel an app uses for every call to another service: its own sidecar's
//! outbound port, which picks the destination from the gRPC path.

use std::{net::SocketAddr, time::Duration};

use tonic::transport::{Channel, Endpoint};

/// How long to wait for the sidecar to accept a connection; it is on the same host,
/// so anything longer means it is not there.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A lazily connecting channel to `http://<addr>` (h2c). Clone it freely: all clones
/// share one connection. Must be called inside a tokio runtime.
pub fn sidecar_channel(addr: SocketAddr) -> Channel {
    let uri = format!("http://{addr}");
    // A formatted SocketAddr (IPv6 in brackets) is always a valid authority, so this
    // cannot fail; the fallback only exists to avoid a panic path.
    let endpoint = Endpoint::from_shared(uri).unwrap_or_else(|_| Endpoint::from_static("http://127.0.0.1:1"));
    endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect_lazy()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn builds_for_v4_and_v6() {
        let _ = sidecar_channel("127.0.0.1:4000".parse().expect("addr"));
        let _ = sidecar_channel("[::1]:4000".parse().expect("addr"));
    }
}
