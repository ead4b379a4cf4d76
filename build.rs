//! Generates the prost types for `proto/ws.proto` without a system `protoc`:
//! `protox` parses the file into a descriptor set, prost-build generates Rust.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/ws.proto");
    let fds = protox::compile(["ws.proto"], ["proto"])?;
    // Clients written in other languages (Python tests, load tools) can load
    // this descriptor set instead of needing protoc themselves.
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("ws_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    let mut config = prost_build::Config::new();
    // `bytes` fields as `bytes::Bytes`: decoding from a `Bytes` frame shares
    // the buffer instead of copying the payload.
    config.bytes(["."]);
    config.compile_fds(fds)?;
    Ok(())
}
