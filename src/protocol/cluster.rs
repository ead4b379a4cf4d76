//! The wire types of `proto/cluster.proto` (package `edk.cluster.v1`):
//! envelopes between nodes on Redis pub/sub. Crate-private.
#![allow(missing_docs, dead_code)]

include!(concat!(env!("OUT_DIR"), "/edk.cluster.v1.rs"));

/// The wire version this build speaks (`Envelope.version`).
pub const WIRE_VERSION: u32 = 1;
