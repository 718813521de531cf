//! Pods on one machine: the shop as Kubernetes would run it, without
//! Kubernetes. Each replica is a network namespace of its own (its own
//! loopback, an address on a bridge), holding its app and its sidecar, both
//! started with `ip netns exec`, reading the mesh.toml that `mesh k8s`
//! renders for pods (endpoints are headless DNS names, inbound on the pod's
//! address). dnsmasq, run by the test on the bridge, answers those names
//! with the pods' addresses, as a cluster's DNS answers for a headless
//! Service; a pod leaves or joins by an edit of its hosts file and SIGHUP.
//!
//! Everything lives in namespaces the test makes (the bridge too, in a hub
//! namespace), on 10.215.0.0/24, and traffic goes only there. A guard
//! removes processes and namespaces even when the test panics; namespaces
//! left by a run that was killed are removed by the next.
//!
//! Root only, as CI runs (`ip netns` needs it): the test says so rather
//! than skipping.

use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use meshwork_config::MeshConfig;
use meshwork_proto::{
    cart::{self, cart_service_client::CartServiceClient},
    catalog::{self, catalog_service_client::CatalogServiceClient},
    users::{self, user_service_client::UserServiceClient},
};
use nix::{
    sched::{CloneFlags, setns},
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tonic::transport::Channel;

use crate::support::{
    http,
    mesh_process::{MESH, MESH_PROXY},
};

const PREFIX: &str = "mwt15-";
const BRIDGE: &str = "mwt15br0";
const NAMESPACE: &str = "shop";
/// The hub (bridge and DNS server) is .1; pods are numbered from .10.
const SUBNET: [u8; 3] = [10, 215, 0];
const DNS_TTL: Duration = Duration::from_secs(1);

fn pod_ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], last)
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One pod: a namespace and the processes in it.
struct Pod {
    name: String,
    netns: String,
    /// Sidecar first, then the app (stopped in the other order).
    processes: Vec<Child>,
}

/// The cluster: a hub namespace with the bridge and dnsmasq, and the pods.
/// Dropping it ends every process it started and deletes every namespace
/// (and with them the bridge, the veth pairs and the addresses).
struct Cluster {
    tag: String,
    hub: String,
    dir: PathBuf,
    hosts: PathBuf,
    dnsmasq: Option<Child>,
    pods: Vec<Pod>,
    /// Pods' indexes on the bridge, for veth names.
    next_link: u32,
}

impl Cluster {
    fn new(dir: &Path) -> Cluster {
        remove_leftovers();
        let tag = format!("{PREFIX}{}", std::process::id());
        let hub = format!("{tag}-hub");
        let hosts = dir.join("dns/hosts");
        std::fs::create_dir_all(hosts.parent().expect("dns dir")).expect("dns dir");
        std::fs::write(&hosts, "").expect("hosts");
        let mut cluster = Cluster {
            tag,
            hub: hub.clone(),
            dir: dir.to_path_buf(),
            hosts,
            dnsmasq: None,
            pods: Vec::new(),
            next_link: 0,
        };
        ip(&["netns", "add", &hub]);
        ip(&["-n", &hub, "link", "set", "lo", "up"]);
        ip(&["-n", &hub, "link", "add", BRIDGE, "type", "bridge"]);
        ip(&["-n", &hub, "addr", "add", &format!("{}/24", pod_ip(1)), "dev", BRIDGE]);
        ip(&["-n", &hub, "link", "set", BRIDGE, "up"]);
        let log = File::create(dir.join("dns/dnsmasq.log")).expect("log");
        let dnsmasq = Command::new("ip")
            .args([
                "netns",
                "exec",
                &hub,
                "dnsmasq",
                "--keep-in-foreground",
                "--conf-file=/dev/null",
            ])
            .args([
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--port=53",
                "--user=root",
            ])
            .arg(format!("--listen-address={}", pod_ip(1)))
            .arg(format!("--addn-hosts={}", cluster.hosts.display()))
            .arg(format!("--local-ttl={}", DNS_TTL.as_secs()))
            .arg(format!("--pid-file={}", dir.join("dns/dnsmasq.pid").display()))
            .arg("--log-facility=-")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start dnsmasq");
        cluster.dnsmasq = Some(dnsmasq);
        // Up (and its SIGHUP handler with it) once it has read the hosts
        // file: a SIGHUP before that would end it.
        let log = dir.join("dns/dnsmasq.log");
        let read = format!("read {}", cluster.hosts.display());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&log).unwrap_or_default().contains(&read) {
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        cluster
    }

    /// A new pod namespace with its own loopback and `ip` on the bridge.
    fn add_pod(&mut self, name: &str, last: u8) -> usize {
        let netns = format!("{}-{name}", self.tag);
        ip(&["netns", "add", &netns]);
        self.pods.push(Pod {
            name: name.to_string(),
            netns: netns.clone(),
            processes: Vec::new(),
        });
        self.next_link += 1;
        let link = format!("p{}", self.next_link);
        ip(&[
            "-n", &self.hub, "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ]);
        ip(&["-n", &self.hub, "link", "set", &link, "master", BRIDGE]);
        ip(&["-n", &self.hub, "link", "set", &link, "up"]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{}/24", pod_ip(last)),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &netns, "link", "set", "eth0", "up"]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        self.pods.len() - 1
    }

    /// Starts `program args` inside pod `pod`, its output in a log file.
    fn run_in(&mut self, pod: usize, label: &str, program: &str, args: &[String]) {
        let log_path = self.dir.join(format!("logs/{}-{label}.log", self.pods[pod].name));
        std::fs::create_dir_all(log_path.parent().expect("logs")).expect("logs");
        let log = File::create(&log_path).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.pods[pod].netns, program])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start in pod");
        self.pods[pod].processes.push(child);
    }

    /// The headless names, one line per ready pod (what the endpoints
    /// controller keeps in DNS), and dnsmasq told to read them again.
    fn publish(&self, listed: &[(&str, Ipv4Addr)]) {
        let text: String = listed
            .iter()
            .map(|(service, ip)| format!("{ip} {service}.{NAMESPACE}.svc.cluster.local\n"))
            .collect();
        std::fs::write(&self.hosts, text).expect("hosts");
        let pid = self.dnsmasq.as_ref().expect("dnsmasq").id();
        kill(Pid::from_raw(pid as i32), Signal::SIGHUP).expect("SIGHUP dnsmasq");
    }

    /// Deletes pod `pod` as a kubelet does: the app is asked to stop, then
    /// its sidecar (a native sidecar outlives the app), then the namespace.
    fn delete_pod(&mut self, pod: usize) {
        let mut processes = std::mem::take(&mut self.pods[pod].processes);
        while let Some(mut child) = processes.pop() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait().expect("wait").is_none() {
                assert!(Instant::now() < deadline, "{} did not stop", self.pods[pod].name);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        ip(&["netns", "del", &self.pods[pod].netns]);
        self.pods[pod].netns.clear();
    }

    fn log_tails(&self) -> String {
        let mut out = String::new();
        let logs = std::fs::read_dir(self.dir.join("logs")).into_iter().flatten().flatten();
        let dns = std::fs::read_dir(self.dir.join("dns")).into_iter().flatten().flatten();
        for entry in logs
            .chain(dns)
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let lines: Vec<_> = text.lines().rev().take(8).collect();
            out.push_str(&format!("--- {}\n", entry.path().display()));
            for line in lines.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("pods test failed; last lines of each process:\n{}", self.log_tails());
        }
        for pod in &mut self.pods {
            for child in pod.processes.iter_mut().rev() {
                let _ = child.kill();
                let _ = child.wait();
            }
            if !pod.netns.is_empty() {
                let _ = Command::new("ip").args(["netns", "del", &pod.netns]).status();
            }
        }
        if let Some(mut dnsmasq) = self.dnsmasq.take() {
            let _ = dnsmasq.kill();
            let _ = dnsmasq.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.hub]).status();
    }
}

/// Namespaces of runs that were killed before their guard ran (their
/// process is gone): deleted, with whatever they held.
fn remove_leftovers() {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|rest| rest.split('-').next()) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Runs `task` on a thread of its own inside network namespace `netns`,
/// on a runtime of that thread: every socket it opens is the pod's, so
/// 127.0.0.1 is that pod's loopback.
fn in_netns<T, F>(netns: &str, task: impl FnOnce() -> F + Send + 'static) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    let path = Path::new("/run/netns").join(netns);
    std::thread::spawn(move || {
        let ns = File::open(&path).expect("open the pod's namespace");
        setns(&ns, CloneFlags::CLONE_NEWNET).expect("enter the pod's namespace");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(task())
    })
}

fn join<T>(handle: std::thread::JoinHandle<T>) -> T {
    handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Waits until `admin` answers `/ready` with 200, up to `within`.
async fn ready(admin: SocketAddr, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let answer = http::get(admin, "/ready").await;
        if matches!(answer, Ok((200, _))) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{admin} not ready after {within:?}: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Calls received on a sidecar's inbound side, from its `/metrics`.
async fn inbound_calls(admin: SocketAddr) -> u64 {
    let Ok((200, text)) = http::get(admin, "/metrics").await else {
        return 0;
    };
    text.lines()
        .filter(|l| l.starts_with("meshwork_requests_total{") && l.contains("direction=\"inbound\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn the_shop_runs_as_pods_found_by_dns() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the pods test makes network namespaces and needs root, as CI runs it (scripts/test)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();

    // The mesh.toml of the manifests, with its state here and the test's
    // DNS server as the nameserver.
    let shop = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh.toml");
    let rendered = Command::new(MESH)
        .args(["k8s", "--pod-config", "--namespace", NAMESPACE, "--config"])
        .arg(&shop)
        .output()
        .expect("mesh k8s");
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let rendered = String::from_utf8(rendered.stdout).expect("utf-8");
    let state = dir.join("state");
    let text = rendered.replace(
        "state_dir = \"/var/lib/mesh\"",
        &format!("state_dir = \"{}\"", state.display()),
    ) + &format!("\n[discovery]\nnameserver = \"{}:53\"\n", pod_ip(1));
    assert_ne!(text, rendered);
    let config_path = dir.join("mesh.toml");
    std::fs::write(&config_path, &text).expect("write mesh.toml");
    let config = MeshConfig::parse(&text, &config_path).expect("the pods' mesh.toml");
    let certs = Command::new(MESH)
        .arg("certs")
        .arg("--config")
        .arg(&config_path)
        .output()
        .expect("mesh certs");
    assert!(certs.status.success(), "{}", String::from_utf8_lossy(&certs.stderr));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data");
    let config_arg = config_path.display().to_string();

    let mut cluster = Cluster::new(dir);
    // One pod per replica: two of catalog; a third joins later.
    let layout: [(&str, u8); 5] = [
        ("users", 11),
        ("catalog", 21),
        ("catalog", 22),
        ("cart", 31),
        ("payments", 41),
    ];
    let start_pod = |cluster: &mut Cluster, service: &str, last: u8| -> usize {
        let s = &config.services[service];
        let pod = cluster.add_pod(&format!("{service}-{last}"), last);
        let sidecar = ["--config", &config_arg, "--name", service, "--replica", "0"].map(String::from);
        cluster.run_in(pod, "proxy", MESH_PROXY, &sidecar);
        let app = [
            "serve",
            service,
            "--listen",
            &s.app.to_string(),
            "--sidecar",
            &s.outbound.to_string(),
            "--data-dir",
            &data.display().to_string(),
        ]
        .map(String::from);
        cluster.run_in(pod, "app", MESH, &app);
        pod
    };
    // Listed first, so that no sidecar starts with an empty answer (a
    // cluster lists a pod once it is ready; here they start together).
    cluster.publish(&layout.map(|(service, last)| (service, pod_ip(last))));
    let mut pods = Vec::new();
    for (service, last) in layout {
        pods.push(start_pod(&mut cluster, service, last));
    }
    // The shopper's pod: the demo client's sidecar, on that pod's loopback.
    let client = cluster.add_pod("client", 100);
    let demo = &config.clients["demo"];
    cluster.run_in(
        client,
        "proxy",
        MESH_PROXY,
        &["--config", &config_arg, "--name", "demo", "--replica", "0"].map(String::from),
    );
    let client_ns = cluster.pods[client].netns.clone();
    let (demo_outbound, demo_admin) = (demo.outbound, demo.admin);
    let admin_of = |service: &str, last: u8| SocketAddr::from((pod_ip(last), config.services[service].admin.port()));
    let admins: Vec<SocketAddr> = layout.iter().map(|(s, last)| admin_of(s, *last)).collect();

    // Every sidecar ready, probed over the bridge as a kubelet would.
    join(in_netns(&client_ns, move || async move {
        ready(demo_admin, Duration::from_secs(60)).await;
        for admin in admins {
            ready(admin, Duration::from_secs(60)).await;
        }
    }));

    // A checkout across pods: client → cart → users, catalog, payments,
    // every hop between pods over mTLS, found by DNS.
    let order = join(in_netns(&client_ns, move || async move {
        let channel = Channel::from_shared(format!("http://{demo_outbound}"))
            .expect("uri")
            .connect_lazy();
        let user = UserServiceClient::new(channel.clone())
            .register(users::RegisterRequest {
                email: "pods@example.com".into(),
                password: "long enough password".into(),
                display_name: "Pod Shopper".into(),
            })
            .await
            .expect("register")
            .into_inner()
            .user
            .expect("user");
        let mut carts = CartServiceClient::new(channel);
        carts
            .add_item(cart::AddItemRequest {
                user_id: user.id.clone(),
                product_id: "book-ddia".into(),
                quantity: 1,
            })
            .await
            .expect("add item");
        carts
            .checkout(cart::CheckoutRequest { user_id: user.id })
            .await
            .expect("checkout")
            .into_inner()
            .order
            .expect("order")
    }));
    assert!(!order.id.is_empty());
    println!(
        "pods: checkout across pods: order {} ({} lines)",
        order.id,
        order.lines.len()
    );

    // No app is reachable from another pod: not the app's port, not the
    // sidecar's outbound (both on the pod's own loopback); the inbound port
    // is, and it speaks only mTLS. In its own pod, the app is there.
    let catalog = &config.services["catalog"];
    let (app_port, out_port, in_port) = (catalog.app.port(), catalog.outbound.port(), catalog.inbound.port());
    let catalog_ip = pod_ip(21);
    join(in_netns(&client_ns, move || async move {
        for port in [app_port, out_port] {
            let addr = SocketAddr::from((catalog_ip, port));
            let result = tokio::net::TcpStream::connect(addr).await;
            assert!(result.is_err(), "{addr} is reachable from another pod");
            let own = SocketAddr::from(([127, 0, 0, 1], port));
            assert!(
                tokio::net::TcpStream::connect(own).await.is_err(),
                "{own} in the client's pod"
            );
        }
        let inbound = SocketAddr::from((catalog_ip, in_port));
        tokio::net::TcpStream::connect(inbound)
            .await
            .expect("the inbound port is open");
        let plain = Channel::from_shared(format!("http://{inbound}"))
            .expect("uri")
            .connect_lazy();
        let answer = CatalogServiceClient::new(plain)
            .get_product(catalog::GetProductRequest {
                product_id: "book-ddia".into(),
            })
            .await;
        assert!(
            answer.is_err(),
            "a plaintext call went through the inbound port: {answer:?}"
        );
    }));
    let catalog_ns = cluster.pods[pods[1]].netns.clone();
    join(in_netns(&catalog_ns, move || async move {
        let own = SocketAddr::from(([127, 0, 0, 1], app_port));
        tokio::net::TcpStream::connect(own)
            .await
            .expect("the app on its pod's loopback");
    }));

    // Steady reads through the client's sidecar while a catalog pod goes
    // away and another comes.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = in_netns(&client_ns, {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        move || async move {
            let channel = Channel::from_shared(format!("http://{demo_outbound}"))
                .expect("uri")
                .connect_lazy();
            let mut workers = Vec::new();
            for worker in 0..8u64 {
                let mut client = CatalogServiceClient::new(channel.clone());
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                workers.push(tokio::spawn(async move {
                    let mut errors = Vec::new();
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while !stop.load(Relaxed) && Instant::now() < deadline {
                        let result = if worker % 2 == 0 {
                            let request = catalog::GetProductRequest {
                                product_id: "book-ddia".into(),
                            };
                            client.get_product(request).await.map(drop)
                        } else {
                            let request = catalog::ListProductsRequest {
                                page_size: 10,
                                ..Default::default()
                            };
                            client.list_products(request).await.map(drop)
                        };
                        match result {
                            Ok(()) => ok.fetch_add(1, Relaxed),
                            Err(status) => {
                                errors.push(format!("{:?}: {}", status.code(), status.message()));
                                failed.fetch_add(1, Relaxed)
                            }
                        };
                    }
                    errors
                }));
            }
            let mut errors = Vec::new();
            for worker in workers {
                errors.extend(worker.await.expect("worker"));
            }
            errors
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    let before = ok.load(Relaxed);
    assert!(before > 50, "steady load before the pod went away: {before} calls");

    // Pod catalog-21 is deleted: out of DNS, its app stopped, then its
    // sidecar, then its namespace.
    let deleted_at = Instant::now();
    let remaining: Vec<_> = layout.into_iter().filter(|(_, last)| *last != 21).collect();
    cluster.publish(
        &remaining
            .iter()
            .map(|(s, last)| (*s, pod_ip(*last)))
            .collect::<Vec<_>>(),
    );
    cluster.delete_pod(pods[1]);
    let gone_after = deleted_at.elapsed();
    std::thread::sleep(Duration::from_millis(2000));
    let failed_while_deleting = failed.load(Relaxed);
    let ok_after_delete = ok.load(Relaxed) - before;

    // A new catalog pod: started, ready, then listed in DNS; how long until
    // it serves its first call.
    let new_pod = start_pod(&mut cluster, "catalog", 23);
    let new_admin = admin_of("catalog", 23);
    join(in_netns(&client_ns, move || async move {
        ready(new_admin, Duration::from_secs(60)).await;
    }));
    let mut listed = remaining.clone();
    listed.push(("catalog", 23));
    let published_at = Instant::now();
    cluster.publish(&listed.iter().map(|(s, last)| (*s, pod_ip(*last))).collect::<Vec<_>>());
    let first_call = join(in_netns(&client_ns, move || async move {
        let deadline = published_at + Duration::from_secs(10);
        while inbound_calls(new_admin).await == 0 {
            assert!(Instant::now() < deadline, "the new pod got no call within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        published_at.elapsed()
    }));
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Relaxed);
    let errors = join(load);
    let (ok, failed) = (ok.load(Relaxed), failed.load(Relaxed));
    let _ = new_pod;
    println!(
        "pods: a catalog pod deleted under load: {failed_while_deleting} reads failed \
         ({ok_after_delete} succeeded in the 2 s after; the pod was gone {gone_after:?} after it left DNS); \
         a new pod served its first call {first_call:?} after it was listed (DNS TTL {DNS_TTL:?}); \
         {ok} reads in all, {failed} failed"
    );
    assert!(
        ok_after_delete > 50,
        "load went on after the pod was deleted: {ok_after_delete}"
    );
    assert_eq!(failed, 0, "reads failed: {:?}", &errors[..errors.len().min(10)]);
    // Within its TTL, and the time a call takes to find it and connect.
    assert!(
        first_call <= DNS_TTL + Duration::from_millis(1000),
        "the new pod got its first call {first_call:?} after it was listed"
    );
    drop(cluster);
    let left = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let tag = format!("{PREFIX}{}-", std::process::id());
    assert!(
        !String::from_utf8_lossy(&left.stdout).contains(&tag),
        "namespaces left behind: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
