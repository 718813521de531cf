//! Contracts read from a real gRPC server's reflection (v1, and v1alpha for
//! servers that only have it) give the same method table as the same
//! contracts read from their descriptor file.

use meshwork_contracts::{ContractSet, reflection};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};

/// (path, idempotency, client streaming, server streaming) of every method.
fn table(set: &ContractSet) -> Vec<String> {
    let mut rows: Vec<String> = set
        .pool()
        .services()
        .flat_map(|s| {
            s.methods()
                .map(|m| {
                    let level = m
                        .method_descriptor_proto()
                        .options
                        .as_ref()
                        .map(|o| o.idempotency_level());
                    format!(
                        "/{}/{} {level:?} {} {}",
                        s.full_name(),
                        m.name(),
                        m.is_client_streaming(),
                        m.is_server_streaming()
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    rows.sort();
    rows
}

enum Version {
    V1,
    V1Alpha,
}

/// A server with only the given reflection version, on a loopback port.
async fn reflection_server(version: Version) -> Channel {
    let builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(meshwork_proto::FILE_DESCRIPTOR_SET);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = match version {
        Version::V1 => Server::builder().add_service(builder.build_v1().expect("v1")),
        Version::V1Alpha => Server::builder().add_service(builder.build_v1alpha().expect("v1alpha")),
    };
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

#[tokio::test]
async fn reflection_v1_gives_the_descriptor_files_table() {
    let from_file = ContractSet::decode(meshwork_proto::FILE_DESCRIPTOR_SET, "descriptors").expect("decodes");
    let reflected = reflection::fetch(reflection_server(Version::V1).await, "reflection")
        .await
        .expect("reflection answers");
    assert_eq!(table(&reflected), table(&from_file));
    assert!(
        table(&reflected)
            .iter()
            .any(|r| r.starts_with("/shop.catalog.v1.CatalogService/GetProduct Some(NoSideEffects)"))
    );
}

#[tokio::test]
async fn reflection_v1alpha_only_servers_are_read_too() {
    let from_file = ContractSet::decode(meshwork_proto::FILE_DESCRIPTOR_SET, "descriptors").expect("decodes");
    let reflected = reflection::fetch(reflection_server(Version::V1Alpha).await, "reflection")
        .await
        .expect("v1alpha answers");
    assert_eq!(table(&reflected), table(&from_file));
}

#[tokio::test]
async fn a_server_without_reflection_is_an_error_not_a_hang() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (_, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        Server::builder()
            .add_service(health)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let error = reflection::fetch(channel, "reflection")
        .await
        .expect_err("no reflection");
    assert!(error.to_string().starts_with("reflection call failed: "), "{error}");
}
