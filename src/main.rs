//! `ddserver`: the one binary. Thin on purpose: it parses arguments, loads
//! the configuration, opens the store, wires the parts together and maps
//! errors to exit codes. The parts live in their crates (`store`,
//! `responder`, `updater`); `serve.rs`, `feed.rs` and `updater.rs` hold the
//! wiring between them.
//!
//! Exit codes: 0 success; 1 the command failed (the message says why, and
//! nothing was committed); 2 bad usage or configuration.

mod admin;
mod cli;
mod config;
mod control;
mod feed;
mod metrics;
mod serve;
mod updater;
mod zonefile;
mod zoneload;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use ddserver_store::Store;

use crate::cli::{Cli, Command};
use crate::config::Config;

// The packet path allocates nothing per query; everything else (loading,
// publishing snapshots, HTTP) benefits from a fast allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    no_transparent_huge_pages();
    let cli = Cli::parse();
    let path = cli.config.clone().or_else(Config::default_path);
    let (config, origin) = match Config::load(path.as_deref(), std::env::vars()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("ddserver: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    if let Command::CheckConfig = cli.command {
        println!("# ddserver configuration from {origin} (secrets redacted)");
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ddserver")
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ddserver: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, &config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ddserver: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Opens the database named by the configuration and applies migrations.
async fn open_store(config: &Config) -> Result<Store> {
    let store = Store::connect(config.database.url.expose())
        .await
        .with_context(|| format!("opening the database {}", config.database.url))?;
    store
        .migrate()
        .await
        .with_context(|| format!("migrating the database {}", config.database.url))?;
    Ok(store)
}

/// Runs an admin command with its commits pushed to the responders, and
/// waits (at most `[feed] push_timeout_ms`) until the pushes are written
/// before the process exits. Exit 0 still means only "committed": a push
/// that could not be delivered is covered by the responders' polling.
async fn admin_command(
    store: &Store,
    config: &Config,
    what: &str,
    command: impl std::future::Future<Output = Result<()>>,
) -> Result<()> {
    control::start_pushing(store, config, &format!("ddserver {what}"), None);
    let result = command.await;
    let timeout = std::time::Duration::from_millis(config.feed.push_timeout_ms);
    if !store.flush_pushes(timeout).await {
        tracing::debug!("feed: pushes not delivered within {timeout:?}; responders poll the log");
    }
    result
}

/// Keeps this process's memory in 4 KiB pages. mimalloc asks for
/// transparent huge pages on its arenas, and a 2 MiB page is resident as a
/// whole once any of it is touched: at 1M names the responder held 14 MB
/// (13% of its resident size) more with them, for no change in CPU per
/// query that `bench/peers_loadgen.sh` could see (bench/README.md,
/// "Memory after the load").
/// Set before anything large is allocated; applies to later page faults.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments and only sets a
    // flag of this process; failure (old kernels) changes nothing.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

async fn run(command: Command, config: &Config) -> Result<()> {
    let store = open_store(config).await?;
    let result = match command {
        Command::Serve => serve::serve(config, &store).await,
        Command::Responder => serve::responder(config, &store).await,
        Command::Updater => updater::updater(config, &store).await,
        Command::Migrate => {
            println!("database {} is up to date", config.database.url);
            Ok(())
        }
        Command::CheckConfig => unreachable!("handled before the runtime starts"),
        Command::Zone(command) => {
            admin_command(&store, config, "zone", async {
                admin::zone(&store, config, command).await
            })
            .await
        }
        Command::User(command) => {
            admin_command(&store, config, "user", async {
                admin::user(&store, config, command).await
            })
            .await
        }
        Command::Host(command) => {
            admin_command(&store, config, "host", async {
                admin::host(&store, config, command).await
            })
            .await
        }
        Command::Audit { limit } => admin::audit(&store, limit).await,
    };
    store.close().await;
    result
}
