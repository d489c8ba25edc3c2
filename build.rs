//! Generates the Sparkplug B protobuf types from `proto/sparkplug_b.proto`.
//!
//! `protoc` is not available on the gateways' build machines nor in CI, so the schema is parsed
//! by protox (a protobuf compiler in pure Rust) and the resulting descriptors are handed to
//! prost-build, which writes `org.eclipse.tahu.protobuf.rs` into `OUT_DIR`.

use std::error::Error;

const PROTO: &str = "proto/sparkplug_b.proto";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    println!("cargo:rerun-if-changed=build.rs");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
