//! `shardcast-load`: the bundled RTMP load generator.
//!
//! It publishes P streams and plays each with V viewers against a running relay, then
//! reports what a deployment needs to know: whether every viewer got in, how long that
//! took, how late and how complete the media arrived, how much the relay delivered, and
//! (with `--server-pid`) what that cost the relay in CPU time and memory.
//!
//! The modules, in the order data flows:
//! - `settings.rs`: command line, scenario files, URL templates;
//! - `source.rs`, `h264.rs`, `marker.rs`: what publishers send, and the marker (sequence
//!   number and send time) in every video message; `multitrack.rs`, the E-RTMP
//!   multitrack stream (`--multitrack`) and its per-track checks;
//! - `publisher.rs`, `viewer.rs`, `scanner.rs`: the two roles, on `ClientSession`;
//!   `discard.rs` drains the viewers that only count bytes;
//! - `run.rs`, `stats.rs`, `clock.rs`, `server_usage.rs`: threads, phases, measurements;
//! - `admin.rs`: the server's own view, from its admin HTTP API (`--admin`);
//! - `report.rs`: the table and the JSON.

mod admin;
mod clock;
mod discard;
mod flv;
mod flv_viewer;
mod h264;
mod marker;
mod multitrack;
mod publisher;
mod report;
mod run;
mod scanner;
mod server_usage;
mod settings;
mod source;
mod stats;
mod tls_client;
mod viewer;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

fn main() -> ExitCode {
    let cli = match settings::Cli::try_parse() {
        Ok(cli) => cli,
        // clap turns `{n}` anywhere in help text into a line break, so the help is written
        // with a word joiner inside the braces and the joiner taken out here: a URL template
        // copied from `--help` then expands.
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp) => {
            print!("{}", settings::visible_templates(&e.render().to_string()));
            return ExitCode::SUCCESS;
        }
        Err(e) => e.exit(),
    };
    let settings = match settings::Settings::from_cli(cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shardcast-load: {e}");
            return ExitCode::from(2);
        }
    };
    let json_path = settings.json.clone();
    let report = match run::run(settings) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shardcast-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report.table());
    if let Some(path) = json_path {
        let text = match serde_json::to_string_pretty(&report) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("shardcast-load: cannot encode the report: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = std::fs::write(&path, text + "\n") {
            eprintln!("shardcast-load: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
