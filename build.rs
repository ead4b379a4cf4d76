//! Generates the prost types for `proto/ws.proto` (the client protocol) and
//! `proto/cluster.proto` (between nodes) without a system `protoc`: `protox`
//! parses the files into a descriptor set, prost-build generates Rust.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/ws.proto");
    println!("cargo:rerun-if-changed=proto/cluster.proto");
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // Clients written in other languages (Python tests, load tools) can load
    // this descriptor set instead of needing protoc themselves.
    let ws = protox::compile(["ws.proto"], ["proto"])?;
    std::fs::write(
        out_dir.join("ws_descriptor.bin"),
        prost::Message::encode_to_vec(&ws),
    )?;
    // `bytes` fields as `bytes::Bytes`: decoding from a `Bytes` frame shares
    // the buffer instead of copying the payload.
    prost_build::Config::new().bytes(["."]).compile_fds(ws)?;
    // cluster.proto imports ws.proto: its types refer to the ones generated
    // above (extern), so only edk.cluster.v1 is generated here.
    let cluster = protox::compile(["cluster.proto"], ["proto"])?;
    prost_build::Config::new()
        .bytes(["."])
        .extern_path(".edk.ws.v1", "crate::protocol::proto")
        .compile_fds(cluster)?;
    Ok(())
}
