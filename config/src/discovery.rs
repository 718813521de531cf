//! Discovery by DNS: a service whose replicas come and go (pods behind a
//! Kubernetes headless Service) names its endpoints by a DNS name and port
//! (`endpoints = "catalog.shop.svc.cluster.local:7202"`) instead of the fixed
//! inbound addresses of its replicas; `[discovery]` says which nameserver
//! answers and how often answers are asked again.

use std::{fmt, net::SocketAddr, time::Duration};

use serde::Deserialize;

/// `host:port`, where `host` is a DNS name whose A/AAAA records are the
/// service's replicas and `port` their sidecars' inbound port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct DnsEndpoints {
    /// Lowercase, without a trailing dot (it is looked up as a full name).
    pub host: String,
    pub port: u16,
}

impl TryFrom<String> for DnsEndpoints {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let wrong = || format!("'{text}' is not a DNS name and port such as \"catalog.shop.svc.cluster.local:7202\"");
        let (host, port) = text.rsplit_once(':').ok_or_else(wrong)?;
        let host = host.strip_suffix('.').unwrap_or(host);
        let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(wrong)?;
        // An address is not a name: fixed addresses go in `inbound`.
        if host.parse::<std::net::IpAddr>().is_ok() || !is_host_name(host) {
            return Err(wrong());
        }
        Ok(DnsEndpoints {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for DnsEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Labels of letters, digits and '-', not starting or ending with '-'.
fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// `[discovery]`: how DNS names in `endpoints` are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discovery {
    /// The nameserver to ask (UDP, then TCP), for example `"10.96.0.10:53"`.
    /// Absent: the system's, from `/etc/resolv.conf` (a pod's cluster DNS).
    #[serde(default)]
    pub nameserver: Option<SocketAddr>,
    /// An answer is asked again after its TTL, but never sooner than this
    /// (a TTL of 0 would otherwise mean a query per call)...
    #[serde(default = "default_min_ttl", with = "humantime_serde")]
    pub min_ttl: Duration,
    /// ...and never later than this, so a long TTL cannot hide a pod that
    /// went away for long.
    #[serde(default = "default_max_ttl", with = "humantime_serde")]
    pub max_ttl: Duration,
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery {
            nameserver: None,
            min_ttl: default_min_ttl(),
            max_ttl: default_max_ttl(),
        }
    }
}

fn default_min_ttl() -> Duration {
    Duration::from_secs(1)
}

fn default_max_ttl() -> Duration {
    Duration::from_secs(30)
}

impl Discovery {
    /// The rules serde cannot express, as (key, reason).
    pub(crate) fn check(&self) -> Result<(), (String, String)> {
        if self.min_ttl.is_zero() {
            return Err(("discovery.min_ttl".into(), "must be longer than 0s".into()));
        }
        if self.min_ttl > self.max_ttl {
            return Err(("discovery.min_ttl".into(), "must not exceed discovery.max_ttl".into()));
        }
        Ok(())
    }

    /// How long an answer with `ttl` is used before it is asked again.
    pub fn refresh_after(&self, ttl: Duration) -> Duration {
        ttl.clamp(self.min_ttl, self.max_ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ports() {
        let ok = DnsEndpoints::try_from("catalog.shop.svc.cluster.local.:7202".to_string()).expect("valid");
        assert_eq!(ok.host, "catalog.shop.svc.cluster.local");
        assert_eq!(ok.to_string(), "catalog.shop.svc.cluster.local:7202");
        for bad in [
            "catalog",
            "catalog:0",
            "catalog:x",
            ":7202",
            "10.0.0.1:7202",
            "Catalog.x:1",
            "a..b:1",
            "-a:1",
        ] {
            let err = DnsEndpoints::try_from(bad.to_string()).expect_err(bad);
            assert!(err.contains("is not a DNS name and port"), "{err}");
        }
    }

    fn parse(extra_service: &str, extra: &str) -> Result<crate::MeshConfig, crate::ConfigError> {
        let text = format!(
            r#"
            trust_domain = "t.local"
            {extra}
            [services.catalog]
            app = "127.0.0.1:7102"
            inbound = "0.0.0.0:7202"
            outbound = "127.0.0.1:7302"
            admin = "0.0.0.0:7402"
            grpc_services = ["shop.catalog.v1.CatalogService"]
            {extra_service}
            "#
        );
        crate::MeshConfig::parse(&text, std::path::Path::new("mesh.toml"))
    }

    #[test]
    fn a_service_names_its_endpoints_and_bad_ones_are_refused_with_the_key() {
        let config = parse(r#"endpoints = "catalog.shop.svc.cluster.local:7202""#, "").expect("valid");
        let endpoints = config.services["catalog"].endpoints.as_ref().expect("endpoints");
        assert_eq!(endpoints.to_string(), "catalog.shop.svc.cluster.local:7202");
        assert_eq!(config.discovery, Discovery::default());
        let err = parse(r#"endpoints = "catalog.shop""#, "").expect_err("no port");
        assert_eq!(err.key(), "services.catalog.endpoints");
        assert!(
            err.to_string()
                .starts_with("mesh.toml: services.catalog.endpoints: 'catalog.shop' is not a DNS name and port"),
            "{err}"
        );
    }

    #[test]
    fn the_discovery_section_is_checked() {
        let config = parse("", "[discovery]\nnameserver = \"127.0.0.1:5353\"\nmin_ttl = \"2s\"").expect("valid");
        assert_eq!(config.discovery.nameserver, Some(([127, 0, 0, 1], 5353).into()));
        assert_eq!(config.discovery.min_ttl, Duration::from_secs(2));
        let err = parse("", "[discovery]\nmin_ttl = \"1m\"").expect_err("min above max");
        assert_eq!(
            err.to_string(),
            "mesh.toml: discovery.min_ttl: must not exceed discovery.max_ttl"
        );
        let err = parse("", "[discovery]\nnameserver = \"ns.local\"").expect_err("not an address");
        assert_eq!(err.key(), "discovery.nameserver");
    }

    #[test]
    fn ttl_is_clamped() {
        let d = Discovery::default();
        assert_eq!(d.refresh_after(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(d.refresh_after(Duration::from_secs(5)), Duration::from_secs(5));
        assert_eq!(d.refresh_after(Duration::from_secs(300)), Duration::from_secs(30));
    }
}
