//! `orchestrator`: parse the command line, load the configuration, run the command.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use orchestrator::app::App;
use orchestrator::cli::{Cli, Command, backup, normalize_args, validate_files, validator};

/// mimalloc: the engine allocates many small short-lived values per step; glibc malloc
/// showed up at the top of profiles. Version 2 (the `v2` feature): under a steady load,
/// version 3 kept ~8 MiB more resident from about eleven minutes of uptime on (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse_from(normalize_args(std::env::args_os()));
    if let Some(Command::Sandbox {
        fuel,
        max_bytes,
        memory_bytes,
    }) = &cli.command
    {
        return sandbox(*fuel, *max_bytes, *memory_bytes);
    }
    if let Some(Command::Client(command)) = cli.command {
        return orchestrator::client::main(&cli.client, command, Cli::command);
    }
    let serving = matches!(cli.command, None | Some(Command::Serve));
    let config = match cli.load_config(serving || matches!(cli.command, Some(Command::Migrate))) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("orchestrator: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match &cli.command {
        Some(Command::Validate { files }) => validate(&config, files),
        Some(Command::Migrate) => runtime().and_then(|rt| rt.block_on(migrate(config))),
        Some(Command::Backup { file }) => backup(&config, file)
            .map(|done| {
                println!("{done}");
                ExitCode::SUCCESS
            })
            .map_err(anyhow::Error::from),
        Some(Command::Health { url }) => health(&config, url.as_deref()),
        None | Some(Command::Serve) => runtime().and_then(|rt| rt.block_on(serve(config))),
        // Dispatched before the configuration is loaded.
        Some(Command::Sandbox { .. } | Command::Client(_)) => Ok(ExitCode::from(2)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "orchestrator: {}",
                orchestrator::problems::chain(e.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

/// The template sandbox child: no config, no runtime, its memory capped.
fn sandbox(fuel: u64, max_bytes: usize, memory_bytes: u64) -> ExitCode {
    let budget = orchestrator::expr::Budget { fuel, max_bytes };
    match orchestrator::sandbox::child::run(budget, memory_bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orchestrator sandbox: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn validate(
    config: &orchestrator::config::Config,
    files: &[std::path::PathBuf],
) -> anyhow::Result<ExitCode> {
    let validator = validator(config).map_err(anyhow::Error::msg)?;
    let valid = validate_files(&validator, files, &mut std::io::stdout())?;
    Ok(if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn health(config: &orchestrator::config::Config, url: Option<&str>) -> anyhow::Result<ExitCode> {
    use orchestrator::probe;
    let url = match url {
        Some(url) => url.to_owned(),
        None => probe::default_url(&config.server.host, config.server.port)?,
    };
    let status = probe::probe(&url, probe::TIMEOUT)?;
    println!("{url}: {status}");
    Ok(ExitCode::SUCCESS)
}

async fn migrate(config: orchestrator::config::Config) -> anyhow::Result<ExitCode> {
    orchestrator::app::open_store(&config).await?;
    println!("migrations applied");
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: orchestrator::config::Config) -> anyhow::Result<ExitCode> {
    orchestrator::telemetry::init(&config.log);
    let app = App::build(config).await?;
    app.run(signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGINT or SIGTERM.
async fn signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
