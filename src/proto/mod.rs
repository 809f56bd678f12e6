//! The generated `presence.v1` types and services, and the encoded descriptor set that the
//! reflection service serves.

pub mod codec;

tonic::include_proto!("presence.v1");
// serde in the proto3 JSON mapping (pbjson), for the web listener's JSON subprotocol.
include!(concat!(env!("OUT_DIR"), "/presence.v1.serde.rs"));

/// Encoded `FileDescriptorSet` of `presence.proto`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/presence_descriptor.bin"));
