//! The `hivegate` binary: parse the command line, set up telemetry, run the command,
//! flush what telemetry has left to export.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // Before anything reads a secret or starts a tool's process.
    let hidden = hivegate::tools::hide_from_children();
    // Before the runtime allocates its sessions (see `hivegate::memory`).
    let small_pages = hivegate::memory::small_pages();
    let cli = hivegate::cli::Cli::parse();
    let default_level = if matches!(cli.command, hivegate::cli::Command::Serve(_) | hivegate::cli::Command::Worker(_)) {
        "info"
    } else {
        "warn"
    };
    let telemetry = hivegate::telemetry::init(default_level);
    if !hidden {
        tracing::warn!("the process could not be made undumpable: its tools' processes may read its environment");
    }
    if !small_pages {
        tracing::debug!("transparent huge pages could not be turned off; the process runs with the system's setting");
    }
    let code = match hivegate::cli::run(cli) {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("hivegate: {e:#}");
            std::process::ExitCode::from(2)
        }
    };
    telemetry.shutdown();
    code
}
