//! Routing: which mesh service a call is for. By the gRPC service in the
//! path (the mesh knows which service serves which contract), else by the
//! `:authority` host when it names a mesh service (so `grpcurl -authority
//! catalog` reaches catalog's reflection and health). A call for no known
//! destination is answered `UNIMPLEMENTED`.
//!
//! The route holds one inner stack per destination, built once at start.

use std::{
    collections::HashMap,
    convert::Infallible,
    future::{Ready, ready},
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::Either;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use meshwork_config::MeshConfig;
use tower::{Service, ServiceExt, util::Oneshot};

use super::destination::Destination;
use crate::{
    body::ProxyBody,
    grpc::{Code, GrpcPath, status},
};

/// Where calls go: index into the destination list, by gRPC service and by name.
#[derive(Debug, Default)]
pub struct RouteTable {
    by_grpc_service: HashMap<Box<str>, usize>,
    by_name: HashMap<Box<str>, usize>,
}

impl RouteTable {
    pub fn new(config: &MeshConfig, destinations: &[Destination]) -> Self {
        let mut table = RouteTable::default();
        for (index, destination) in destinations.iter().enumerate() {
            table.by_name.insert(destination.name.as_ref().into(), index);
            if let Some(service) = config.services.get(destination.name.as_ref()) {
                for grpc in &service.grpc_services {
                    table.by_grpc_service.insert(grpc.as_str().into(), index);
                }
            }
        }
        table
    }

    /// The destination for a call to `uri`, or the message to refuse it with.
    pub fn lookup(&self, uri: &Uri) -> Result<usize, String> {
        let path = GrpcPath::parse(uri.path());
        if let Some(&index) = path.and_then(|p| self.by_grpc_service.get(p.service)) {
            return Ok(index);
        }
        if let Some(&index) = uri.host().and_then(|host| self.by_name.get(host)) {
            return Ok(index);
        }
        Err(match path {
            Some(p) => format!("no mesh service serves '{}' (path {})", p.service, uri.path()),
            None => format!("no mesh service serves path '{}'", uri.path()),
        })
    }
}

#[derive(Clone)]
pub struct Route<S> {
    table: Arc<RouteTable>,
    endpoints: Arc<[S]>,
}

impl<S> Route<S> {
    /// Routes over `destinations`, building each one's stack with `new_endpoint`.
    pub fn new<E>(
        config: &MeshConfig,
        destinations: &[Destination],
        new_endpoint: impl FnMut(&Destination) -> Result<S, E>,
    ) -> Result<Self, E> {
        let endpoints = destinations.iter().map(new_endpoint).collect::<Result<Vec<S>, E>>()?;
        Ok(Route {
            table: Arc::new(RouteTable::new(config, destinations)),
            endpoints: endpoints.into(),
        })
    }
}

type Answer = Ready<Result<Response<ProxyBody>, Infallible>>;

impl<S> Service<Request<Incoming>> for Route<S>
where
    S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible> + Clone,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Either<Oneshot<S, Request<Incoming>>, Answer>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Which endpoint is needed is only known per call; each call waits
        // for its own endpoint's readiness (oneshot).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        match self.table.lookup(req.uri()) {
            Ok(index) => match self.endpoints.get(index) {
                Some(endpoint) => Either::Left(endpoint.clone().oneshot(req)),
                None => Either::Right(ready(Ok(status::response(Code::Internal, "route table out of step")))),
            },
            Err(message) => {
                tracing::debug!(%message, "no route");
                Either::Right(ready(Ok(status::response(Code::Unimplemented, &message))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let config = MeshConfig::parse(
            r#"
            trust_domain = "t.local"
            [services.catalog]
            app = "127.0.0.1:1"
            inbound = "127.0.0.1:2"
            outbound = "127.0.0.1:3"
            admin = "127.0.0.1:4"
            grpc_services = ["shop.catalog.v1.CatalogService"]
            [services.users]
            app = "127.0.0.1:11"
            inbound = "127.0.0.1:12"
            outbound = "127.0.0.1:13"
            admin = "127.0.0.1:14"
            grpc_services = ["shop.users.v1.UserService", "shop.users.v1.Admin"]
            "#,
            std::path::Path::new("mesh.toml"),
        )
        .expect("config");
        RouteTable::new(&config, &Destination::all(&config))
    }

    fn uri(s: &str) -> Uri {
        s.parse().expect("uri")
    }

    #[test]
    fn routes_by_grpc_service() {
        let t = table();
        assert_eq!(
            t.lookup(&uri("http://127.0.0.1:7300/shop.catalog.v1.CatalogService/Get")),
            Ok(0)
        );
        assert_eq!(t.lookup(&uri("http://localhost/shop.users.v1.Admin/Ban")), Ok(1));
        // The path wins over the authority.
        assert_eq!(t.lookup(&uri("http://users/shop.catalog.v1.CatalogService/Get")), Ok(0));
    }

    #[test]
    fn routes_by_authority_when_path_is_not_a_mesh_contract() {
        let t = table();
        let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
        assert_eq!(t.lookup(&uri(&format!("http://catalog{reflection}"))), Ok(0));
        assert_eq!(t.lookup(&uri("http://users:80/grpc.health.v1.Health/Check")), Ok(1));
    }

    #[test]
    fn unknown_destination_names_the_service() {
        let t = table();
        assert_eq!(
            t.lookup(&uri("http://127.0.0.1:7300/x.Y/M")),
            Err("no mesh service serves 'x.Y' (path /x.Y/M)".to_string())
        );
        assert_eq!(
            t.lookup(&uri("http://127.0.0.1:7300/nope")),
            Err("no mesh service serves path '/nope'".to_string())
        );
    }
}
