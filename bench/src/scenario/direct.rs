//! `direct`: the load generator calls the echo server itself. The floor
//! every proxy is compared with.

use std::net::SocketAddr;

use super::Target;
use crate::args::ScenarioKind;

pub fn start(echo: SocketAddr) -> Target {
    Target {
        kind: ScenarioKind::Direct,
        addr: echo,
        mode: "no proxy".into(),
        proxies: Vec::new(),
        children: Vec::new(),
        _keep: Vec::new(),
    }
}
