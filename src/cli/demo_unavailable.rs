//! `plantwatch demo` in a build without the `demo` feature: there is no embedded MQTT broker
//! to run the demo plant against, so the command says what is missing and how to get it.

use std::process::ExitCode;

/// Arguments of `demo`: anything is accepted, so the answer is the same whatever was typed.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    #[arg(hide = true, trailing_var_arg = true, allow_hyphen_values = true)]
    ignored: Vec<String>,
}

/// What `plantwatch demo` answers in this build.
pub(super) const UNAVAILABLE: &str = "this plantwatch was built without the `demo` feature, so \
     it has no embedded MQTT broker to run the demo on: build it with the default features \
     (`cargo build`), or run `plantwatch run` against your own broker";

/// Fails with [`UNAVAILABLE`]: the demo needs the broker this build left out.
pub(super) async fn run(_args: &Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!(UNAVAILABLE)
}
