//! The `gatehouse` command: run, check, explain, healthcheck.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use gatehouse::config::{self, ProcessEnv};
use gatehouse::registry::Registries;
use gatehouse::server::{Gateway, ShutdownOutcome, StartOptions};

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "A programmable API gateway and reverse proxy"
)]
struct Cli {
    /// Path of gateway.yaml.
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        default_value = "gateway.yaml",
        env = "GATEHOUSE_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Run {
        /// Do not watch the config files; reload only on SIGHUP.
        #[arg(long)]
        no_watch: bool,
    },
    /// Load and validate the config; print every error; exit 1 if there is any.
    Check,
    /// Show how a request would be routed and forwarded, without sending it.
    Explain {
        /// Request method, e.g. GET.
        method: String,
        /// Request URL, e.g. http://api.example.com/api/v1/orders/7 or /hello.
        url: String,
        /// A request header, 'Name: value'; repeatable.
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
    },
    /// Probe /health of the running gateway (at admin.listen, else server.listen; no other
    /// setting is read); print `ok` and exit 0 when healthy (for container HEALTHCHECK).
    Healthcheck {
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Mint a token for trying routes with curl: signed with an HS provider's secret, or with
    /// a private key (--key) for an RS/PS/ES/EdDSA provider.
    Token(TokenArgs),
}

#[derive(clap::Args)]
struct TokenArgs {
    /// Provider name under jwt.providers.
    #[arg(long, default_value = "default")]
    provider: String,
    /// The `sub` claim.
    #[arg(long)]
    sub: String,
    /// Roles, comma-separated (written at the provider's roles_claim).
    #[arg(long, value_delimiter = ',')]
    roles: Vec<String>,
    /// Scopes, comma-separated (written as the space-separated `scope` claim).
    #[arg(long, value_delimiter = ',')]
    scopes: Vec<String>,
    /// Another claim, `name=value` (value parsed as JSON when it is valid JSON); repeatable.
    #[arg(long = "claim")]
    claims: Vec<String>,
    /// Lifetime, e.g. 15m or 1h.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// PEM private key to sign with, for a provider that verifies with public keys (RSA,
    /// EC P-256/P-384 or Ed25519; PKCS#8, or PKCS#1 for RSA).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Algorithm to sign with (with --key); default: the first the provider accepts that the
    /// key can sign with.
    #[arg(long, requires = "key")]
    alg: Option<String>,
    /// `kid` header, for providers that pick keys from a JWKS (with --key).
    #[arg(long, requires = "key")]
    kid: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run { no_watch: false }) {
        Command::Run { no_watch } => run(cli.config, !no_watch),
        Command::Check => check(&cli.config),
        Command::Explain {
            method,
            url,
            headers,
        } => explain(&cli.config, &method, &url, &headers),
        Command::Token(args) => token(&cli.config, &args),
        Command::Healthcheck { timeout } => match runtime() {
            Ok(runtime) => runtime.block_on(healthcheck(&cli.config, timeout)),
            Err(code) => code,
        },
    }
}

/// The runtime for control work (signals, reloads, the admin listener); requests are served
/// by the gateway's own worker threads (`server.workers`).
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all().build().map_err(|e| {
        eprintln!("cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

fn load(path: &std::path::Path, registries: &Registries) -> Result<config::Snapshot, ExitCode> {
    config::load(path, &ProcessEnv, registries).map_err(|errors| {
        eprintln!("{errors}");
        eprintln!(
            "{} error(s) in the config; nothing was started",
            errors.0.len()
        );
        ExitCode::FAILURE
    })
}

fn run(path: PathBuf, watch: bool) -> ExitCode {
    // The pools and metrics made while loading are the ones the gateway then serves with.
    let registries = Registries::default();
    let Ok(snapshot) = load(&path, &registries) else {
        return ExitCode::FAILURE;
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let mut options = StartOptions::new(&path);
    options.watch = watch;
    runtime.block_on(serve(options, snapshot, registries))
}

async fn serve(
    options: StartOptions,
    snapshot: config::Snapshot,
    registries: Registries,
) -> ExitCode {
    let _log_guard = gatehouse::observability::logging::init(&snapshot.logging);
    gatehouse::observability::panics::install(std::sync::Arc::clone(&registries.metrics));
    let handle = match Gateway::start_with(options, snapshot, registries).await {
        Ok(handle) => handle,
        Err(e) => {
            tracing::error!(error = %e, "gatehouse could not start");
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let signal = wait_for_shutdown_signal(&handle).await;
    tracing::info!(signal, "shutting down: draining connections");
    match handle.shutdown(None).await {
        ShutdownOutcome::Drained => {
            tracing::info!("shutdown complete");
            ExitCode::SUCCESS
        }
        ShutdownOutcome::Cut(n) => {
            tracing::warn!(
                connections = n,
                "shutdown grace period ended; connections were cut"
            );
            ExitCode::from(2)
        }
    }
}

/// Reloads on SIGHUP until SIGTERM or SIGINT arrives; returns that signal's name.
async fn wait_for_shutdown_signal(handle: &gatehouse::server::GatewayHandle) -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    loop {
        tokio::select! {
            _ = term.recv() => return "SIGTERM",
            _ = int.recv() => return "SIGINT",
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                // `reload` logs every outcome under this trigger name.
                gatehouse::server::reload::reload(handle.state(), "SIGHUP").await;
            }
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match load(path, &Registries::default()) {
        Ok(snapshot) => {
            for warning in &snapshot.warnings {
                eprintln!("{warning}");
            }
            println!(
                "{}: ok — {} file(s), {} route(s), {} upstream(s)",
                path.display(),
                snapshot.files.len(),
                snapshot.router.routes().len(),
                snapshot.upstreams.len()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn explain(path: &std::path::Path, method: &str, url: &str, headers: &[String]) -> ExitCode {
    let Ok(snapshot) = load(path, &Registries::default()) else {
        return ExitCode::FAILURE;
    };
    let has_token = headers.iter().any(|h| {
        h.split_once(':')
            .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
    });
    if has_token {
        fetch_remote_keys(&snapshot);
    }
    match gatehouse::explain::explain(&snapshot, method, url, headers) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// `explain` verifies a token as the gateway would, so `jwks_url` providers need their keys:
/// one fetch each, all at once, each bounded by the fetch timeout. No refresher is started.
fn fetch_remote_keys(snapshot: &config::Snapshot) {
    let remotes: Vec<_> = snapshot
        .providers
        .iter()
        .filter_map(|(name, p)| p.remote.as_ref().map(|r| (name, r)))
        .collect();
    if remotes.is_empty() {
        return;
    }
    // `runtime()` reports why it failed; explain then goes on without the fetched keys.
    let Ok(runtime) = runtime() else {
        return;
    };
    let results = runtime.block_on(futures_util::future::join_all(
        remotes.iter().map(|(_, remote)| remote.fetch_now()),
    ));
    for ((name, remote), result) in remotes.iter().zip(results) {
        if let Err(e) = result {
            eprintln!(
                "note: jwt provider `{name}`: cannot fetch {}: {e}; its tokens show as unknown_kid",
                remote.url()
            );
        }
    }
}

async fn healthcheck(path: &std::path::Path, timeout: u64) -> ExitCode {
    let mut addr = match probe_address(path) {
        Ok(addr) => addr,
        Err(message) => {
            eprintln!("{}: {message}", path.display());
            return ExitCode::FAILURE;
        }
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let probe = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer.starts_with(b"HTTP/1.1 200"))
    };
    match tokio::time::timeout(Duration::from_secs(timeout), probe).await {
        Ok(Ok(true)) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Ok(Ok(false)) => {
            eprintln!("{addr}/health did not answer 200");
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("cannot reach {addr}: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("{addr}/health did not answer within {timeout}s");
            ExitCode::FAILURE
        }
    }
}

/// Where `gatehouse run` on this config listens for /health: `admin.listen`, else
/// `server.listen`, else the default. Only those two keys are read and interpolated, so the
/// probe works where the variables of other sections (JWT secrets) are not set; the variables
/// those two keys name must be, as for the gateway itself.
fn probe_address(path: &std::path::Path) -> Result<std::net::SocketAddr, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let root = marked_yaml::parse_yaml(0, &text).map_err(|e| format!("invalid YAML: {e}"))?;
    let sections = root
        .as_mapping()
        .ok_or("the file must be a mapping of sections")?;
    let listen = |section: &str| -> Result<Option<String>, String> {
        let Some(node) = sections.get_node(section) else {
            return Ok(None);
        };
        let Some(map) = node.as_mapping() else {
            let empty = node
                .as_scalar()
                .is_some_and(|s| matches!(s.as_str(), "" | "~" | "null"));
            return if empty {
                Ok(None)
            } else {
                Err(format!("`{section}` must be a mapping"))
            };
        };
        let Some(value) = map.get_node("listen") else {
            return Ok(None);
        };
        let value = value.as_scalar().ok_or(format!(
            "`{section}.listen` must be an address such as 0.0.0.0:8080"
        ))?;
        config::interpolate::interpolate(value.as_str(), &ProcessEnv)
            .map(|v| Some(v.trim().to_string()))
            .map_err(|e| format!("{section}.listen: {e}"))
    };
    let (key, value) = match listen("admin")? {
        Some(admin) => ("admin.listen", admin),
        None => match listen("server")? {
            Some(server) => ("server.listen", server),
            None => ("server.listen", DEFAULT_LISTEN.to_string()),
        },
    };
    let addr: std::net::SocketAddr = value
        .parse()
        .map_err(|_| format!("{key}: invalid address `{value}`"))?;
    if addr.port() == 0 {
        return Err(format!(
            "{key} has port 0 (any free port), so the port to probe is unknown"
        ));
    }
    Ok(addr)
}

/// `server.listen` when the config has none (CONFIG.md).
const DEFAULT_LISTEN: &str = "0.0.0.0:8080";

// jemalloc, configured in .cargo/config.toml: see the note on the dependency in Cargo.toml.
// Without the default `jemalloc` feature the system allocator serves, so heap profilers that
// hook malloc (heaptrack) see every allocation.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn token(path: &std::path::Path, args: &TokenArgs) -> ExitCode {
    let Ok(snapshot) = load(path, &Registries::default()) else {
        return ExitCode::FAILURE;
    };
    let Some((_, provider)) = snapshot.providers.iter().find(|(n, _)| *n == args.provider) else {
        let known: Vec<&str> = snapshot.providers.iter().map(|(n, _)| n.as_str()).collect();
        eprintln!(
            "no jwt provider `{}` in {} (defined: {})",
            args.provider,
            path.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
        return ExitCode::FAILURE;
    };
    if args.key.is_none() && !provider.verifier.can_mint() {
        eprintln!(
            "provider `{}` verifies with public keys; give the private key of the pair with --key FILE.pem (or ask the identity provider for a token)",
            args.provider
        );
        return ExitCode::FAILURE;
    }
    let alg = match args.alg.as_deref().map(|name| {
        gatehouse::auth::jwt::parse_algorithm(name).ok_or_else(|| {
            format!("--alg `{name}`: expected RS256/384/512, PS256/384/512, ES256/384 or EdDSA")
        })
    }) {
        None => None,
        Some(Ok(alg)) => Some(alg),
        Some(Err(message)) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let ttl = match gatehouse::config::units::parse_duration(&args.ttl) {
        Ok(ttl) => ttl,
        Err(e) => {
            eprintln!("--ttl: {e}");
            return ExitCode::FAILURE;
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut claims = serde_json::json!({
        "sub": args.sub,
        "iat": now,
        "exp": now + ttl.as_secs(),
    });
    if let Some(issuer) = &provider.issuer {
        claims["iss"] = issuer.clone().into();
    }
    if let Some(audience) = provider.audience.first() {
        claims["aud"] = audience.clone().into();
    }
    if !args.roles.is_empty() {
        // Nested objects for a dotted roles_claim such as realm_access.roles.
        let mut at = &mut claims;
        let segments: Vec<&str> = provider.roles_claim_path.split('.').collect();
        for segment in &segments[..segments.len() - 1] {
            at = &mut at[*segment];
            if !at.is_object() {
                *at = serde_json::json!({});
            }
        }
        at[segments[segments.len() - 1]] = args.roles.clone().into();
    }
    if !args.scopes.is_empty() {
        claims["scope"] = args.scopes.join(" ").into();
    }
    for claim in &args.claims {
        let Some((name, value)) = claim.split_once('=') else {
            eprintln!("--claim `{claim}`: expected name=value");
            return ExitCode::FAILURE;
        };
        claims[name] = serde_json::from_str(value).unwrap_or_else(|_| value.into());
    }
    let minted = match &args.key {
        Some(key_path) => match std::fs::read(key_path) {
            Ok(pem) => provider
                .verifier
                .mint_with_key(&claims, &pem, alg, args.kid.as_deref())
                .map_err(|e| format!("{}: {e}", key_path.display())),
            Err(e) => Err(format!("cannot read {}: {e}", key_path.display())),
        },
        None => provider.verifier.mint(&claims),
    };
    match minted {
        Ok(token) => {
            // A key that is not the pair of the provider's public key mints a token the gateway
            // refuses; say so now rather than at the first 401. Keys fetched from a jwks_url
            // are not loaded here, so those providers cannot be asked.
            if provider.remote.is_none() {
                if let Err(failure) = provider
                    .verifier
                    .verify(&token, std::time::SystemTime::now())
                {
                    eprintln!(
                        "warning: provider `{}` would refuse this token: {failure}",
                        args.provider
                    );
                }
            }
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot mint a token: {e}");
            ExitCode::FAILURE
        }
    }
}
