//! Generates, without a system `protoc` (`protox` parses the files into
//! descriptors):
//! - the prost types of `proto/ws.proto` (prost-build), and its descriptor
//!   set for clients in other languages;
//! - the protocol's AsyncAPI document, from the same descriptors and their
//!   comments (`build/asyncapi.rs`, `src/asyncapi/schema.rs`);
//! - the prost types of `proto/cluster.proto` (messages between nodes);
//! - the prost types of the example application's `proto/examples/chat.proto`
//!   (used by `examples/chat.rs` and the tests only, never by the library).

#[path = "build/asyncapi.rs"]
mod asyncapi;
#[path = "src/asyncapi/schema.rs"]
#[allow(dead_code)]
mod schema;

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for f in [
        "proto/ws.proto",
        "proto/cluster.proto",
        "proto/examples/chat.proto",
        "build/asyncapi.rs",
        "src/asyncapi/schema.rs",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(["ws.proto"])?;
    let fds = compiler.file_descriptor_set();
    // Clients written in other languages (Python tests, load tools) can load
    // this descriptor set instead of needing protoc themselves.
    std::fs::write(
        out_dir.join("ws_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    let doc = asyncapi::document(
        &compiler.descriptor_pool(),
        &std::env::var("CARGO_PKG_VERSION")?,
    )?;
    std::fs::write(
        out_dir.join("asyncapi.json"),
        serde_json::to_string_pretty(&doc)?,
    )?;

    // `bytes` fields as `bytes::Bytes`: decoding from a `Bytes` frame shares
    // the buffer instead of copying the payload.
    prost_build::Config::new().bytes(["."]).compile_fds(fds)?;

    // cluster.proto imports ws.proto: its types refer to the ones generated
    // above (extern), so only edk.cluster.v1 is generated here.
    let cluster = protox::compile(["cluster.proto"], ["proto"])?;
    prost_build::Config::new()
        .bytes(["."])
        .extern_path(".edk.ws.v1", "crate::protocol::proto")
        .compile_fds(cluster)?;

    // The example application's types, with `ReflectMessage` (typed routes
    // carry their descriptors).
    let chat = protox::compile(["examples/chat.proto"], ["proto"])?;
    std::fs::write(
        out_dir.join("chat_descriptor.bin"),
        prost::Message::encode_to_vec(&chat),
    )?;
    let mut config = prost_build::Config::new();
    for m in chat.file.iter().flat_map(|f| {
        let pkg = f.package().to_owned();
        f.message_type
            .iter()
            .map(move |m| format!("{pkg}.{}", m.name()))
    }) {
        config.type_attribute(
            &m,
            format!(
                "#[derive(::prost_reflect::ReflectMessage)] \
                 #[prost_reflect(descriptor_pool = \"crate::chat::DESCRIPTOR_POOL\", message_name = \"{m}\")]"
            ),
        );
    }
    config.compile_fds(chat)?;
    Ok(())
}
