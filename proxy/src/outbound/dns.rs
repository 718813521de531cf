//! Following a DNS name for a destination's endpoints (a Kubernetes
//! headless Service: one A/AAAA record per ready pod), with hickory's async
//! resolver on the runtime, never libc's blocking `getaddrinfo`.
//!
//! - Every address in the answer is an endpoint (`port` from mesh.toml).
//! - The name is asked again when the answer's TTL runs out, clamped to
//!   `[discovery] min_ttl`..`max_ttl` (1 s and 30 s by default), and at
//!   once when a call to one of its endpoints fails (pods that went away
//!   show up as failed connections before their TTL ends), but never more
//!   than once per [`FAILURE_GAP`].
//! - An answer without addresses (NXDOMAIN, no records) empties the set:
//!   the name says nobody serves. A resolver that fails (timeout, refused,
//!   SERVFAIL) keeps the last good answer: DNS trouble is no reason to stop
//!   calling pods that were fine a second ago. It is asked again after
//!   `min_ttl`.
//! - Hickory's own cache is cleared before each question: the clamped TTL,
//!   not the record's, decides when an answer is old, and a failure-driven
//!   question must reach the server.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant as StdInstant},
};

use hickory_resolver::{
    TokioResolver,
    config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts},
    net::{NetError, runtime::TokioRuntimeProvider},
};
use meshwork_config::{Discovery, DnsEndpoints};
use tokio::{sync::Notify, time::Instant};

/// The shortest time between two questions when failures ask for them:
/// enough to see a pod that left, without one query per failed call.
pub const FAILURE_GAP: Duration = Duration::from_millis(250);

/// A resolver for `discovery`: its nameserver (UDP, then TCP, on the given
/// port), else the system's from `/etc/resolv.conf`.
pub fn resolver(discovery: &Discovery) -> Result<TokioResolver, NetError> {
    let mut builder = match discovery.nameserver {
        Some(server) => {
            let on_port = |mut c: ConnectionConfig| {
                c.port = server.port();
                c
            };
            let mut ns = NameServerConfig::udp_and_tcp(server.ip());
            ns.connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()].map(on_port).to_vec();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio()?,
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    // One try per question, quickly: the next question comes soon anyway,
    // and the last good answer serves meanwhile.
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 1;
    builder.build()
}

/// What one question gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The endpoints, and how long to use them.
    Endpoints(BTreeSet<SocketAddr>, Duration),
    /// The resolver failed: keep the last answer.
    Failed(String),
}

/// Asks for `target` once.
pub async fn resolve(resolver: &TokioResolver, target: &DnsEndpoints, discovery: &Discovery) -> Answer {
    resolver.clear_cache();
    // A full name: no search domains (a pod's resolv.conf has `ndots:5`,
    // which would try four other names first).
    let fqdn = format!("{}.", target.host);
    match resolver.lookup_ip(fqdn.as_str()).await {
        Ok(lookup) => {
            let ttl = lookup.valid_until().saturating_duration_since(StdInstant::now());
            let addrs = lookup.iter().map(|ip| SocketAddr::new(ip, target.port)).collect();
            Answer::Endpoints(addrs, discovery.refresh_after(ttl))
        }
        Err(error) if error.is_no_records_found() => Answer::Endpoints(BTreeSet::new(), discovery.min_ttl),
        Err(error) => Answer::Failed(error.to_string()),
    }
}

/// Follows `target` for `destination` until the task is aborted, giving
/// every answer to `apply` (`None`: the resolver failed, keep the last).
/// `refresh` is notified when a call to one of the endpoints failed.
pub async fn follow(
    destination: Arc<str>,
    target: DnsEndpoints,
    discovery: Discovery,
    refresh: Arc<Notify>,
    apply: impl Fn(Option<BTreeSet<SocketAddr>>),
) {
    let resolver = match resolver(&discovery) {
        Ok(resolver) => resolver,
        Err(error) => {
            tracing::error!(%destination, endpoints = %target, %error, "cannot build a DNS resolver; the destination has no endpoints");
            apply(None);
            return;
        }
    };
    let mut had_answer = false;
    loop {
        let asked = Instant::now();
        let wait = match resolve(&resolver, &target, &discovery).await {
            Answer::Endpoints(addrs, wait) => {
                if addrs.is_empty() {
                    tracing::warn!(%destination, endpoints = %target, "DNS lists no endpoints");
                }
                had_answer = true;
                apply(Some(addrs));
                wait
            }
            Answer::Failed(error) => {
                match had_answer {
                    true => {
                        tracing::warn!(%destination, endpoints = %target, %error, "DNS failed; keeping the last answer")
                    }
                    false => tracing::warn!(%destination, endpoints = %target, %error, "DNS failed; no endpoints yet"),
                }
                apply(None);
                discovery.min_ttl
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = refresh.notified() => {
                tracing::debug!(%destination, "a call failed; asking DNS again");
                tokio::time::sleep_until(asked + FAILURE_GAP).await;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! A real DNS server for the tests: UDP on 127.0.0.1, a free port,
    //! answering A queries from a table the test changes while the
    //! resolver runs, or refusing to answer at all. Written on
    //! hickory-proto's message codec rather than with hickory-server,
    //! whose authorities are built for zone files, not for answers a test
    //! swaps and breaks mid-run.

    use std::{
        collections::HashMap,
        net::Ipv4Addr,
        sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed},
    };

    use hickory_proto::{
        op::{Message, MessageType, ResponseCode},
        rr::{RData, Record, RecordType, rdata::A},
    };
    use parking_lot::Mutex;
    use tokio::net::UdpSocket;

    use super::*;

    #[derive(Default)]
    pub struct TestDns {
        /// Name (lowercase, with the final dot) to addresses.
        pub records: Mutex<HashMap<String, Vec<Ipv4Addr>>>,
        pub ttl: AtomicU32,
        /// While set, every question is answered SERVFAIL.
        pub broken: AtomicBool,
        /// Questions answered.
        pub questions: AtomicU32,
    }

    impl TestDns {
        pub fn set(&self, name: &str, addrs: &[Ipv4Addr]) {
            self.records.lock().insert(format!("{name}."), addrs.to_vec());
        }
    }

    /// Starts the server; returns its address.
    pub async fn start(dns: Arc<TestDns>) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind test DNS");
        let addr = socket.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
                reply.metadata.message_type = MessageType::Response;
                reply.metadata.recursion_desired = query.metadata.recursion_desired;
                reply.metadata.recursion_available = true;
                reply.metadata.authoritative = true;
                reply.add_queries(query.queries.iter().cloned());
                dns.questions.fetch_add(1, Relaxed);
                if dns.broken.load(Relaxed) {
                    reply.metadata.response_code = ResponseCode::ServFail;
                } else if let Some(q) = query.queries.first() {
                    let name = q.name().to_ascii().to_lowercase();
                    match dns.records.lock().get(&name) {
                        Some(addrs) if q.query_type() == RecordType::A => {
                            for ip in addrs {
                                reply.add_answer(Record::from_rdata(
                                    q.name().clone(),
                                    dns.ttl.load(Relaxed),
                                    RData::A(A(*ip)),
                                ));
                            }
                        }
                        Some(_) => {}
                        None => reply.metadata.response_code = ResponseCode::NXDomain,
                    }
                }
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        addr
    }

    fn target(port: u16) -> DnsEndpoints {
        DnsEndpoints::try_from(format!("catalog.shop.svc.cluster.local:{port}")).expect("valid")
    }

    fn ips(last: &[u8]) -> Vec<Ipv4Addr> {
        last.iter().map(|l| Ipv4Addr::new(10, 215, 0, *l)).collect()
    }

    fn endpoints(last: &[u8], port: u16) -> BTreeSet<SocketAddr> {
        ips(last).into_iter().map(|ip| SocketAddr::from((ip, port))).collect()
    }

    #[tokio::test]
    async fn answers_ttls_failures_and_missing_names() {
        let dns = Arc::new(TestDns::default());
        dns.ttl.store(5, Relaxed);
        dns.set("catalog.shop.svc.cluster.local", &ips(&[11, 12]));
        let discovery = Discovery {
            nameserver: Some(start(dns.clone()).await),
            ..Discovery::default()
        };
        let resolver = resolver(&discovery).expect("resolver");
        let got = resolve(&resolver, &target(7202), &discovery).await;
        let Answer::Endpoints(addrs, wait) = got else {
            panic!("{got:?}")
        };
        assert_eq!(addrs, endpoints(&[11, 12], 7202));
        assert!(
            wait > Duration::from_secs(3) && wait <= Duration::from_secs(5),
            "{wait:?}"
        );

        // TTLs past the ceiling and below the floor are clamped.
        dns.ttl.store(3600, Relaxed);
        let Answer::Endpoints(_, wait) = resolve(&resolver, &target(7202), &discovery).await else {
            panic!()
        };
        assert_eq!(wait, Duration::from_secs(30));
        dns.ttl.store(0, Relaxed);
        let Answer::Endpoints(_, wait) = resolve(&resolver, &target(7202), &discovery).await else {
            panic!()
        };
        assert_eq!(wait, Duration::from_secs(1));

        // Each question reaches the server: no answer from hickory's cache.
        dns.ttl.store(3600, Relaxed);
        let before = dns.questions.load(Relaxed);
        dns.set("catalog.shop.svc.cluster.local", &ips(&[13]));
        let Answer::Endpoints(addrs, _) = resolve(&resolver, &target(7202), &discovery).await else {
            panic!()
        };
        assert_eq!(addrs, endpoints(&[13], 7202));
        assert!(dns.questions.load(Relaxed) > before);

        dns.broken.store(true, Relaxed);
        let got = resolve(&resolver, &target(7202), &discovery).await;
        assert!(matches!(got, Answer::Failed(_)), "{got:?}");
        dns.broken.store(false, Relaxed);

        dns.records.lock().clear();
        let got = resolve(&resolver, &target(7202), &discovery).await;
        assert_eq!(got, Answer::Endpoints(BTreeSet::new(), Duration::from_secs(1)));
    }

    /// Waits until `seen` holds `want`, at most `within`; returns how long it took.
    async fn until(seen: &Mutex<Vec<BTreeSet<SocketAddr>>>, want: &BTreeSet<SocketAddr>, within: Duration) -> Duration {
        let start = Instant::now();
        while seen.lock().last() != Some(want) {
            assert!(start.elapsed() < within, "never saw {want:?}; saw {:?}", seen.lock());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        start.elapsed()
    }

    #[tokio::test]
    async fn follows_changes_on_the_ttl_and_at_once_on_failure_and_keeps_the_last_answer() {
        let dns = Arc::new(TestDns::default());
        dns.ttl.store(1, Relaxed);
        dns.set("catalog.shop.svc.cluster.local", &ips(&[11, 12]));
        let discovery = Discovery {
            nameserver: Some(start(dns.clone()).await),
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(10),
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let refresh = Arc::new(Notify::new());
        let task = tokio::spawn(follow("catalog".into(), target(7202), discovery, refresh.clone(), {
            let seen = seen.clone();
            move |addrs: Option<_>| seen.lock().extend(addrs)
        }));
        until(&seen, &endpoints(&[11, 12], 7202), Duration::from_secs(3)).await;

        // A pod joins: seen within the TTL (1 s) and a little.
        dns.set("catalog.shop.svc.cluster.local", &ips(&[11, 12, 13]));
        let took = until(&seen, &endpoints(&[11, 12, 13], 7202), Duration::from_secs(3)).await;
        assert!(took <= Duration::from_millis(1500), "{took:?}");

        // The resolver fails for a while: the last answer stays.
        dns.broken.store(true, Relaxed);
        let questions = dns.questions.load(Relaxed);
        while dns.questions.load(Relaxed) < questions + 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(seen.lock().last(), Some(&endpoints(&[11, 12, 13], 7202)));
        assert!(seen.lock().iter().all(|s| !s.is_empty()), "a failure emptied the set");
        dns.broken.store(false, Relaxed);

        // A long TTL now, and a pod leaves: a failed call asks at once.
        dns.ttl.store(60, Relaxed);
        until(&seen, &endpoints(&[11, 12, 13], 7202), Duration::from_secs(3)).await;
        let questions = dns.questions.load(Relaxed);
        while dns.questions.load(Relaxed) == questions {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        dns.set("catalog.shop.svc.cluster.local", &ips(&[12, 13]));
        let failed_at = Instant::now();
        refresh.notify_one();
        until(&seen, &endpoints(&[12, 13], 7202), Duration::from_secs(2)).await;
        assert!(
            failed_at.elapsed() < Duration::from_millis(800),
            "{:?}",
            failed_at.elapsed()
        );
        task.abort();
    }
}
