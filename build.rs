//! Compiles the proto with protox (pure Rust, no system `protoc`) and writes the encoded
//! descriptor set to OUT_DIR for the gRPC reflection service.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/presence/v1/presence.proto",
        "proto/presence/v1/admin.proto",
        "proto/presence/v1/authorizer.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // Reflection on the device port describes only the public API, not the admin service
    // (which is served on its own address).
    let mut public = fds.clone();
    public
        .file
        .retain(|f| f.name() == "presence/v1/presence.proto");
    std::fs::write(
        out_dir.join("presence_descriptor.bin"),
        public.encode_to_vec(),
    )?;
    // Generated clients and servers use the codec with small starting buffers (see
    // src/proto/codec.rs): an idle stream would otherwise hold 16 KiB of empty buffers.
    tonic_prost_build::configure()
        .codec_path("crate::proto::codec::LeanCodec")
        .compile_fds(fds)?;
    Ok(())
}
