//! `quipu`: starts a single Quipu broker; `quipu topic|produce|consume|group …` are the
//! client commands of the `quipu-cli` crate.
//!
//! Configuration layers: defaults < `--config FILE` (TOML) < `QUIPU_*` environment < flags.

use std::path::PathBuf;

use clap::Parser;
use quipu_config::{load, Sources};

#[derive(Parser, Debug)]
#[command(
    name = "quipu",
    version,
    about = "Quipu: a Kafka-compatible streaming broker",
    after_help = "Client commands (each with --help):\n  quipu topic create|list|describe|delete\n  quipu produce TOPIC\n  quipu consume TOPIC\n  quipu group list|describe"
)]
struct Args {
    /// TOML configuration file (Kafka's broker setting names).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Data directory (`log.dirs`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Listen address, `host:port` (`listeners`).
    #[arg(long)]
    listen: Option<String>,
    /// Any setting, `key=value` with Kafka's name (`num.partitions=3`); repeatable.
    #[arg(long = "set", short = 's', value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn main() -> std::process::ExitCode {
    if std::env::args()
        .nth(1)
        .is_some_and(|a| quipu_cli::COMMANDS.contains(&a.as_str()))
    {
        return quipu_cli::main(std::env::args_os());
    }
    // Colour only for a person at a terminal, never in a log file.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                // openraft narrates every vote at info and logs every retry to a peer that is
                // down at error; the quorum's network logs those itself, rate-limited.
                .unwrap_or_else(|_| "info,openraft=error,openraft::replication=off".into()),
        )
        .with_ansi(colour)
        .with_writer(move || {
            quipu_broker::log_output::EscapingWriter::new(std::io::stderr(), colour)
        })
        .init();
    let args = Args::parse();
    let mut overrides = Vec::new();
    for s in &args.set {
        match s.split_once('=') {
            Some((k, v)) => overrides.push((k.to_string(), v.to_string())),
            None => {
                eprintln!("error: --set takes KEY=VALUE, got `{s}`");
                return std::process::ExitCode::from(2);
            }
        }
    }
    if let Some(d) = &args.data_dir {
        overrides.push(("log.dirs".into(), d.display().to_string()));
    }
    if let Some(l) = &args.listen {
        overrides.push(("listeners".into(), l.clone()));
    }
    let config = match load(&Sources {
        file: args.config.clone(),
        environment: true,
        overrides,
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: quipu_config::BrokerConfig) -> anyhow::Result<()> {
    let (host, port) = config.listen_host_port();
    let listener = tokio::net::TcpListener::bind((host.as_str(), port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {host}:{port}: {e}"))?;
    quipu_broker::lifecycle::run(config, listener, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}
