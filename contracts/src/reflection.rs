//! Reading an app's contracts from its gRPC server reflection: v1, then
//! v1alpha for servers that only have the older one (grpc-go and grpcio
//! serve only v1alpha). One question per call: list the services, ask for
//! the file that defines each, then for every import not yet received,
//! until the set is closed under imports.

use std::collections::{BTreeSet, HashSet};

use prost::Message;
use prost_types::FileDescriptorProto;
use tonic::transport::Channel;

use crate::set::ContractSet;

#[derive(Debug, thiserror::Error)]
pub enum ReflectionError {
    /// The status is in the message, so not also the `source()`.
    #[error("reflection call failed: {0}")]
    Call(tonic::Status),
    #[error("reflection stream ended before answering")]
    Ended,
    #[error("the server answered a reflection request with an error: {0}")]
    Refused(String),
    #[error("the server sent an answer of another kind than asked")]
    Unexpected,
    #[error("a file descriptor does not decode: {0}")]
    Decode(prost::DecodeError),
    #[error(transparent)]
    Set(#[from] crate::set::SetError),
}

/// Services every gRPC server may offer beside its own: not its contract.
fn is_standard(service: &str) -> bool {
    service.starts_with("grpc.reflection.") || service == "grpc.health.v1.Health"
}

/// The contracts the server on `channel` serves, named `origin` in messages.
pub async fn fetch(channel: Channel, origin: &str) -> Result<ContractSet, ReflectionError> {
    let files = match v1::files(channel.clone()).await {
        Err(ReflectionError::Call(status)) if status.code() == tonic::Code::Unimplemented => {
            v1alpha::files(channel).await?
        }
        other => other?,
    };
    // The files as the server encoded them: decoding them into
    // prost-types would drop the options' extensions (`google.api.http`).
    Ok(ContractSet::from_encoded_files(&files, origin)?)
}

/// Decodes the files of one answer, queueing the imports not seen yet.
fn take_files(
    encoded: Vec<Vec<u8>>,
    files: &mut Vec<Vec<u8>>,
    seen: &mut HashSet<String>,
    wanted: &mut BTreeSet<String>,
) -> Result<(), ReflectionError> {
    for bytes in encoded {
        let file = FileDescriptorProto::decode(bytes.as_slice()).map_err(ReflectionError::Decode)?;
        if !seen.insert(file.name().to_string()) {
            continue;
        }
        wanted.remove(file.name());
        wanted.extend(file.dependency.iter().filter(|d| !seen.contains(*d)).cloned());
        files.push(bytes);
    }
    Ok(())
}

// The two versions' messages are the same protobuf under two packages, so
// one body serves both; a generic function would need a trait over
// tonic-reflection's generated types, which it does not provide.
macro_rules! reflection_version {
    ($name:ident, $pb:path) => {
        mod $name {
            use std::collections::{BTreeSet, HashSet};

            use tokio_stream::StreamExt;
            use tonic::transport::Channel;

            use super::{ReflectionError, is_standard, take_files};
            use $pb::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
            };

            pub async fn files(channel: Channel) -> Result<Vec<Vec<u8>>, ReflectionError> {
                let mut client = ServerReflectionClient::new(channel);
                // One question per stream, its request side closed at once:
                // some servers (grpcio) answer an unknown method only then.
                let mut ask = async |request: MessageRequest| -> Result<MessageResponse, ReflectionError> {
                    let question = ServerReflectionRequest {
                        host: String::new(),
                        message_request: Some(request),
                    };
                    let mut answers = client
                        .server_reflection_info(tokio_stream::once(question))
                        .await
                        .map_err(ReflectionError::Call)?
                        .into_inner();
                    let answer = answers.next().await.ok_or(ReflectionError::Ended)?;
                    match answer.map_err(ReflectionError::Call)?.message_response {
                        Some(MessageResponse::ErrorResponse(e)) => Err(ReflectionError::Refused(e.error_message)),
                        Some(other) => Ok(other),
                        None => Err(ReflectionError::Unexpected),
                    }
                };
                let MessageResponse::ListServicesResponse(list) =
                    ask(MessageRequest::ListServices(String::new())).await?
                else {
                    return Err(ReflectionError::Unexpected);
                };
                let (mut files, mut seen, mut wanted) = (Vec::new(), HashSet::new(), BTreeSet::new());
                for service in list.service.iter().filter(|s| !is_standard(&s.name)) {
                    let MessageResponse::FileDescriptorResponse(found) =
                        ask(MessageRequest::FileContainingSymbol(service.name.clone())).await?
                    else {
                        return Err(ReflectionError::Unexpected);
                    };
                    take_files(found.file_descriptor_proto, &mut files, &mut seen, &mut wanted)?;
                }
                // A file the server does not send is asked for once; the set
                // then fails to build, naming it.
                let mut asked = HashSet::new();
                while let Some(name) = wanted.pop_first() {
                    if !asked.insert(name.clone()) {
                        continue;
                    }
                    let MessageResponse::FileDescriptorResponse(found) =
                        ask(MessageRequest::FileByFilename(name)).await?
                    else {
                        return Err(ReflectionError::Unexpected);
                    };
                    take_files(found.file_descriptor_proto, &mut files, &mut seen, &mut wanted)?;
                }
                Ok(files)
            }
        }
    };
}

reflection_version!(v1, tonic_reflection::pb::v1);
reflection_version!(v1alpha, tonic_reflection::pb::v1alpha);
