//! Calling a method known only from its contract: requests and responses
//! as `prost_reflect::DynamicMessage`, read from and written as proto3
//! JSON. The demo calls services of one's own this way, and so can any
//! part of the mesh that has a contract but no generated code. tonic's
//! `ProstCodec` needs `Default` message types, which a dynamic message (it
//! needs its descriptor) cannot be; hence this codec.

use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor, MethodDescriptor};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
};

/// Encodes dynamic messages; decodes them by `MessageDescriptor`.
pub struct DynamicCodec(pub MessageDescriptor);

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> DynamicEncoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> DynamicDecoder {
        DynamicDecoder(self.0.clone())
    }
}

pub struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode the request: {e}")))
    }
}

pub struct DynamicDecoder(MessageDescriptor);

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| Status::internal(format!("the response does not decode as {}: {e}", self.0.full_name())))
    }
}

/// Calls unary `method` on `channel` with a request written as proto3 JSON;
/// the response comes back as proto3 JSON.
pub async fn call_json(channel: Channel, method: &MethodDescriptor, request_json: &str) -> Result<String, Status> {
    let mut deserializer = serde_json::Deserializer::from_str(request_json);
    let request = DynamicMessage::deserialize(method.input(), &mut deserializer)
        .map_err(|e| Status::invalid_argument(format!("not a {} in JSON: {e}", method.input().full_name())))?;
    let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
    let path = path
        .parse()
        .map_err(|_| Status::internal(format!("'{path}' is not a request path")))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("the channel is not ready: {e}")))?;
    let response = grpc
        .unary(tonic::Request::new(request), path, DynamicCodec(method.output()))
        .await?;
    serde_json::to_string(response.get_ref())
        .map_err(|e| Status::internal(format!("the response does not print as JSON: {e}")))
}
