//! Routing: which mesh service a call is for. By the gRPC service in the
//! path (the mesh knows which service serves which contract), else by the
//! `:authority` host when it names a mesh service (so `grpcurl -authority
//! catalog` reaches catalog's reflection and health). A call for no known
//! destination is answered `UNIMPLEMENTED`.
//!
//! The route holds one inner stack per destination, built once at start.
//! The telemetry layer labels calls by the same [`RouteTable`] rule.

use std::{
    convert::Infallible,
    future::{Ready, ready},
    sync::Arc,
    task::{Context, Poll},
};

use crate::body::RecvBody;
use crate::map::FastMap;
use futures::future::Either;
use http::{Request, Response, Uri};
use meshwork_config::MeshConfig;
use tower::{Service, ServiceExt, util::Oneshot};

use super::destination::Destination;
use crate::{
    body::ProxyBody,
    grpc::{Code, GrpcPath, status},
};

/// Which mesh service a call is for, as a `T` per service: the route keeps
/// an index into its destinations, telemetry the service's name.
#[derive(Debug)]
pub struct RouteTable<T> {
    by_grpc_service: FastMap<Box<str>, T>,
    by_name: FastMap<Box<str>, T>,
}

impl<T: Copy> RouteTable<T> {
    /// A table of the mesh services `entry` gives a value for.
    pub fn new(config: &MeshConfig, mut entry: impl FnMut(&str) -> Option<T>) -> Self {
        let mut table = RouteTable {
            by_grpc_service: FastMap::default(),
            by_name: FastMap::default(),
        };
        for (name, service) in &config.services {
            let Some(value) = entry(name) else { continue };
            table.by_name.insert(name.as_str().into(), value);
            for grpc in &service.grpc_services {
                table.by_grpc_service.insert(grpc.as_str().into(), value);
            }
        }
        table
    }

    /// The service a call to `uri` is for: by the gRPC service in its
    /// path, else by its `:authority` host.
    pub fn get(&self, uri: &Uri) -> Option<T> {
        let by_path = GrpcPath::parse(uri.path()).and_then(|p| self.by_grpc_service.get(p.service));
        let by_authority = || uri.host().and_then(|host| self.by_name.get(host));
        by_path.or_else(by_authority).copied()
    }

    /// Like [`RouteTable::get`], with the message to refuse the call with
    /// when there is none (built only then).
    pub fn lookup(&self, uri: &Uri) -> Result<T, String> {
        self.get(uri).ok_or_else(|| match GrpcPath::parse(uri.path()) {
            Some(p) => format!("no mesh service serves '{}' (path {})", p.service, uri.path()),
            None => format!("no mesh service serves path '{}'", uri.path()),
        })
    }
}

/// Cloned by the server for every call: one reference count.
pub struct Route<S>(Arc<Routes<S>>);

struct Routes<S> {
    table: RouteTable<usize>,
    destinations: Box<[S]>,
}

impl<S> Clone for Route<S> {
    fn clone(&self) -> Self {
        Route(self.0.clone())
    }
}

impl<S> Route<S> {
    /// Routes over `destinations`, building each one's stack with `new_stack`.
    pub fn new<E>(
        config: &MeshConfig,
        destinations: &[Destination],
        new_stack: impl FnMut(&Destination) -> Result<S, E>,
    ) -> Result<Self, E> {
        let stacks = destinations.iter().map(new_stack).collect::<Result<Box<[S]>, E>>()?;
        Ok(Route(Arc::new(Routes {
            table: RouteTable::new(config, |name| destinations.iter().position(|d| d.name.as_ref() == name)),
            destinations: stacks,
        })))
    }
}

type Answer = Ready<Result<Response<ProxyBody>, Infallible>>;

impl<S> Service<Request<RecvBody>> for Route<S>
where
    S: Service<Request<RecvBody>, Response = Response<ProxyBody>, Error = Infallible> + Clone,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Either<Oneshot<S, Request<RecvBody>>, Answer>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Which destination is needed is only known per call; each call waits
        // for its own destination's readiness (oneshot).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<RecvBody>) -> Self::Future {
        match self.0.table.lookup(req.uri()) {
            Ok(index) => match self.0.destinations.get(index) {
                Some(stack) => Either::Left(stack.clone().oneshot(req)),
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

    fn table() -> RouteTable<usize> {
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
        let destinations = Destination::all(&config);
        RouteTable::new(&config, |name| {
            destinations.iter().position(|d| d.name.as_ref() == name)
        })
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
