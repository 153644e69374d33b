//! The `voxgate` binary: parse the command line, validate the configuration, run.

use clap::Parser;
use voxgate_server::config::{Cli, Command, Config};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VOXGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve(args) => Config::from_args(args).and_then(|config| {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(voxgate_server::serve::run(config))
        }),
        Command::CheckConfig { config } => {
            voxgate_server::config::load_catalogue(config.as_deref()).map(|cat| {
                println!(
                    "catalogue OK: {} services, {} tiers, {} plans",
                    cat.services.len(),
                    cat.tiers.len(),
                    cat.plans.len()
                );
            })
        }
        Command::Client(command) => return voxgate_server::cli::run(*command),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("voxgate: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
