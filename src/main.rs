//! The `shardcast` binary: reads the config, sets up logging, runs the relay.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use shardcast::config::{Config, LogFormat, Shards};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A thread-per-core RTMP edge relay.
///
/// Every key of the config file can also be set from the environment:
/// SHARDCAST_SERVER_LISTEN, SHARDCAST_APP_LIVE_GOP_CACHE, ... (see README); the options
/// below win over both.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
struct Cli {
    /// Configuration file.
    #[arg(long, short, default_value = "config/shardcast.toml")]
    config: PathBuf,
    /// Listen address, overriding `server.listen` (e.g. 0.0.0.0:1935).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Admin listener address (JSON API, /metrics, health checks), overriding
    /// `admin.listen`; "" turns it off.
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
    /// Media HTTP listener address (HTTP-FLV, WebSocket-FLV), overriding `http.listen`;
    /// "" turns it off.
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<String>,
    /// RTMPS listener address, overriding `server.tls_listen`; "" turns it off.
    #[arg(long, value_name = "ADDR")]
    tls_listen: Option<String>,
    /// Number of shards (cores), overriding `server.shards`: a number or "auto".
    #[arg(long)]
    shards: Option<String>,
    /// Log filter (tracing env-filter syntax), overriding `log.filter`; RUST_LOG wins over both.
    #[arg(long)]
    log: Option<String>,
    /// Only check the configuration file FILE, print the verdict, and exit.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(path) = &cli.check_config {
        let loaded = shardcast::config::process_environment()
            .and_then(|environment| Config::load_with_env(path, environment));
        return match loaded {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        };
    }
    let config = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let filter_text = cli.log.clone().unwrap_or_else(|| config.log.filter.clone());
    let filter = match EnvFilter::try_from_default_env() {
        Ok(f) => f,
        Err(_) => match EnvFilter::try_new(&filter_text) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("log filter {filter_text:?}: {e}");
                return ExitCode::from(2);
            }
        },
    };
    // Logs go to stderr (stdout is for `--check-config`'s verdict).
    match config.log.format {
        LogFormat::Text => {
            // Colours only on a terminal: log files and journald get plain lines.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_env_filter(filter)
                .with_target(false)
                .with_ansi(ansi)
                .init();
        }
        LogFormat::Json => {
            // Fields at the top level, beside `timestamp` and `level`, so a shipper can index
            // `stream` or `peer` without digging into a nested `fields` object. No span list:
            // the relay opens none, and the key would only be noise on every line.
            tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_writer(std::io::stderr)
                .with_env_filter(filter)
                .with_target(false)
                .init();
        }
    }
    // Names only: values may be secrets.
    let overridden: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| {
            name.starts_with(shardcast::config::ENV_PREFIX)
                && !shardcast::config::NOT_CONFIG_VARIABLES.contains(&name.as_str())
        })
        .collect();
    if !overridden.is_empty() {
        tracing::info!(variables = ?overridden, "config keys set from the environment");
    }
    // SIGHUP reads the same file again, with the same command-line overrides, so a reload
    // does not see the overridden keys as changed.
    let reload_cli = cli.clone();
    let reload = Box::new(move || load(&reload_cli));
    match shardcast::net::runtime::run_with_reload(config, Some(reload)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("shardcast: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The config file named on the command line, with the environment's `SHARDCAST_*`
/// overrides and then the command line's, validated.
fn load(cli: &Cli) -> Result<Config, String> {
    let environment = shardcast::config::process_environment().map_err(|e| e.to_string())?;
    let mut config = Config::load_with_env(&cli.config, environment).map_err(|e| e.to_string())?;
    if let Some(listen) = cli.listen {
        config.server.listen = listen;
    }
    if let Some(http) = &cli.http_listen {
        config.http.listen = http.clone();
    }
    if let Some(admin) = &cli.admin_listen {
        config.admin.listen = admin.clone();
    }
    if let Some(tls) = &cli.tls_listen {
        config.server.tls_listen = tls.clone();
    }
    if let Some(shards) = &cli.shards {
        config.server.shards = match shards.as_str() {
            "auto" => Shards::Auto,
            n => match n.parse::<usize>() {
                Ok(n) if n > 0 => Shards::Count(n),
                _ => {
                    return Err(format!(
                        "--shards: expected a positive number or \"auto\", got {n:?}"
                    ));
                }
            },
        };
        config.server.cpus.clear();
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}
