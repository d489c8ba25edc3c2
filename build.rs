//! Generates the Sparkplug B protobuf types from `proto/sparkplug_b.proto`.
//!
//! `protoc` is not available on the gateways' build machines nor in CI, so the schema is parsed
//! by protox (a protobuf compiler in pure Rust) and the resulting descriptors are handed to
//! prost-build, which writes `org.eclipse.tahu.protobuf.rs` into `OUT_DIR`.
//!
//! It also links the binaries as fixed-address executables on Linux (see below).

use std::error::Error;

const PROTO: &str = "proto/sparkplug_b.proto";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux") {
        // A position-independent executable makes the loader apply ~50 000 relocations at
        // start: it reads 1.2 MB of them and dirties the 1.3 MB of pointer tables they patch,
        // 2.7 MiB of the daemon's resident memory (docs/design.md §8 budget: 15 MiB; measured with
        // benches/e2e.rs, 15.2 against 12.4 MiB). The cost is ASLR for the executable's own
        // image; libraries, stack, heap and mmaps stay randomised. README "Performance budgets".
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    let descriptors = protox::compile([PROTO], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
