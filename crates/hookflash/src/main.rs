//! `hookflash`: the voice server (`serve`) and its provisioning commands.

mod cli;
mod log_limit;

/// mimalloc instead of glibc malloc: many short calls allocate and free a lot of small
/// objects on several threads; mimalloc keeps RSS lower and flatter under that churn.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hookflash_config::Config;
use hookflash_engine::Engine;
use hookflash_store::Store;
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

#[derive(Parser, Debug)]
#[command(
    name = "hookflash",
    version,
    about = "Programmable voice server: SIP registrar + B2BUA with anchored media and live call control"
)]
struct Cli {
    /// TOML configuration file (see docs/config.md); env HOOKFLASH_CONFIG.
    #[arg(long, global = true, env = "HOOKFLASH_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (the default when no command is given).
    Serve,
    #[command(flatten)]
    Admin(cli::AdminCommand),
}

#[derive(Debug, Error)]
enum ServeError {
    #[error("configuration: {0}")]
    Config(#[from] hookflash_config::ConfigError),
    #[error("database: {0}")]
    Store(#[from] hookflash_store::StoreError),
    #[error("{0}")]
    Engine(#[from] hookflash_engine::EngineError),
    #[error("{0}")]
    Api(#[from] hookflash_api::ApiError),
    #[error("http.tls_cert/tls_key: {0}")]
    HttpTls(#[from] hookflash_sip::tls::TlsSetupError),
}

/// Transparent huge pages off for this process, before the allocator has touched much memory.
/// A call's memory is a few dozen KB scattered over the allocator's arenas; with huge pages the
/// kernel backs each touched 2 MiB region in full, which cost ~20 KB of RSS per active call
/// (101 -> 75 KB per call at 500 calls, BENCHMARKS.md). Returns whether the kernel agreed.
fn disable_transparent_huge_pages() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and touches no memory of ours.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        true
    }
}

/// Raises the soft open-file limit to the hard limit: every TCP connection and RTP socket is
/// a descriptor, and a default soft limit of 1,024 would stop a busy server long before its
/// memory does. Returns the (soft, hard) limits in force afterwards.
fn raise_open_file_limit() -> Option<(libc::rlim_t, libc::rlim_t)> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit write/read only the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return None;
            }
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim = raised;
                }
            }
        }
        Some((lim.rlim_cur, lim.rlim_max))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// `serve` logs at info by default; admin commands only warn, so their output stays readable.
/// The SIP library logs every message in full (credentials included) at info: it is held at
/// warn unless RUST_LOG asks for more.
fn init_tracing(default_level: &str) {
    let default_level = format!("{default_level},{}", hookflash_sip::QUIET_STACK_LOGS);
    let default_level = default_level.as_str();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let json = std::env::var("HOOKFLASH_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // At most 20 warnings per call site per 10 s; the rest are counted and summarised.
    let limiter = log_limit::RepeatLimiter::new(20, Duration::from_secs(10));
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let limit = log_limit::RepeatFilter(limiter.clone());
    let installed = if json {
        let fmt = tracing_subscriber::fmt::layer()
            .json()
            .with_target(false)
            .with_filter(limit);
        tracing_subscriber::registry()
            .with(filter)
            .with(fmt)
            .try_init()
    } else {
        let fmt = tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_filter(limit);
        tracing_subscriber::registry()
            .with(filter)
            .with(fmt)
            .try_init()
    };
    if installed.is_ok() {
        log_limit::report_suppressed(limiter, Duration::from_secs(10));
    }
}

fn main() -> ExitCode {
    let thp_disabled = disable_transparent_huge_pages();
    let cli = Cli::parse();
    let serving = matches!(cli.command, None | Some(Command::Serve));
    init_tracing(if serving { "info" } else { "warn" });
    if !thp_disabled {
        tracing::debug!("transparent huge pages stay as the system sets them (prctl refused)");
    }
    // Everything the server and its admin commands create (database, recordings, voicemail,
    // caches) is the server user's alone: files 0600, directories 0700.
    #[cfg(unix)]
    // SAFETY: umask only sets the process's file mode mask.
    unsafe {
        libc::umask(0o077);
    }
    if serving {
        match raise_open_file_limit() {
            Some((soft, hard)) => tracing::debug!(soft, hard, "open-file limit"),
            None => tracing::warn!("cannot read or raise the open-file limit"),
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hookflash: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let config = match Config::load(cli.config.as_deref()).and_then(|c| c.validate().map(|_| c))
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("hookflash: configuration error: {e}");
                return ExitCode::from(2);
            }
        };
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => match serve(config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!(error = %e, "hookflash stopped");
                    eprintln!("hookflash: {e}");
                    ExitCode::FAILURE
                }
            },
            Command::Admin(cmd) => match cli::run(cmd, &config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hookflash: {e}");
                    ExitCode::FAILURE
                }
            },
        }
    })
}

async fn serve(config: Config) -> Result<(), ServeError> {
    let store = Store::open_configured(&config.data_dir, config.database_url.as_ref()).await?;
    // Provision first: the demo account is only for a server that has no account at all.
    store.apply_provisioning(&config.accounts).await?;
    if config.demo_account {
        if let Some(demo) = store.ensure_demo_account().await? {
            print_demo(&config, &demo);
        }
    }
    let engine = Engine::start(&config, store).await?;
    let stop = CancellationToken::new();
    let options = hookflash_api::HttpOptions {
        oauth_lifetimes: hookflash_api::ringcentral::OAuthLifetimes {
            access_secs: secs(config.oauth.access_token_ttl_secs),
            refresh_secs: secs(config.oauth.refresh_token_ttl_secs),
            jwt_credential_max_secs: secs(
                config.oauth.jwt_credential_max_days.saturating_mul(86_400),
            ),
        },
        tls: match (&config.http.tls_cert, &config.http.tls_key) {
            (Some(cert), Some(key)) => Some(hookflash_sip::tls::server_config(cert, key)?),
            _ => None,
        },
        push_answer_timeout: std::time::Duration::from_millis(config.http.push_answer_timeout_ms),
        ..Default::default()
    };
    let (http_addr, http) =
        hookflash_api::bind_with(config.http.listen, engine.clone(), stop.clone(), options).await?;
    info!(
        sip_udp = ?engine.sip_udp_addr(),
        sip_tcp = ?engine.sip_tcp_addr(),
        sip_tls = ?engine.sip_tls_addr(),
        http = %http_addr,
        rtp = %format!("{}:{}-{}", config.rtp.bind_ip, config.rtp.port_min, config.rtp.port_max),
        data = %config.data_dir.display(),
        database = %match &config.database_url {
            Some(url) => url.redacted(),
            None => format!("sqlite {}", config.data_dir.join(hookflash_store::DB_FILE_NAME).display()),
        },
        "hookflash is running"
    );
    let http_task = tokio::spawn(http);
    shutdown_signal().await;
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    info!(
        grace_secs = grace.as_secs(),
        "stopping: draining calls (a second signal ends them at once)"
    );
    tokio::select! {
        _ = engine.shutdown(grace) => {}
        _ = shutdown_signal() => {
            info!("second stop signal: ending the calls now");
            engine.shutdown(Duration::ZERO).await;
        }
    }
    stop.cancel();
    match http_task.await {
        Ok(r) => r?,
        Err(e) => error!(error = %e, "HTTP task panicked"),
    }
    engine.store().close().await;
    info!("stopped");
    Ok(())
}

/// A configured number of seconds as the API's signed seconds (validated ranges fit).
fn secs(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn print_demo(config: &Config, demo: &hookflash_store::DemoCredentials) {
    let sip = config
        .sip
        .udp
        .or(config.sip.tcp)
        .map(|a| a.to_string())
        .unwrap_or_default();
    println!("=================================================================");
    println!(" hookflash demo account created (shown once; stored hashed)");
    println!(
        "   account: {}   realm/domain: {}",
        demo.account.name, demo.account.realm
    );
    println!("   SIP server: {sip}");
    for (ext, password) in &demo.users {
        println!("   user {ext}  password {password}");
    }
    println!("   API key: {}", demo.api_key);
    println!(
        "   OAuth client (RingCentral dialect): id {}  secret {}",
        demo.oauth_client_id, demo.oauth_client_secret
    );
    println!("=================================================================");
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
