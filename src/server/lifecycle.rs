//! Starting a gateway, and stopping it gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::listener::{accept_loop, OpenConnections, Phase, Placement, Role, Transport};
use super::reload::{self, ReloadOutcome};
use super::state::GatewayState;
use super::workers::{self, Workers};
use crate::config::{self, ConfigErrors, Env, ProcessEnv, Snapshot};
use crate::registry::Registries;

/// How to start a gateway.
#[derive(Clone)]
pub struct StartOptions {
    /// Path of gateway.yaml.
    pub config_path: PathBuf,
    /// Where `${VAR}` values come from.
    pub env: Arc<dyn Env + Send + Sync>,
    /// Whether file changes reload the config (default: yes).
    pub watch: bool,
}

impl StartOptions {
    /// Options for a config file, reading variables from the process environment.
    pub fn new(config_path: impl Into<PathBuf>) -> Self {
        StartOptions {
            config_path: config_path.into(),
            env: Arc::new(ProcessEnv),
            watch: true,
        }
    }
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config is invalid.
    #[error("{0}")]
    Config(ConfigErrors),
    /// The worker threads could not be started.
    #[error("cannot start worker threads: {0}")]
    Workers(std::io::Error),
    /// A listener could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Starts gateways.
pub struct Gateway;

impl Gateway {
    /// Loads the config and starts serving it.
    pub async fn start(options: StartOptions) -> Result<GatewayHandle, StartError> {
        let registries = Registries::default();
        let snapshot = config::load(&options.config_path, &*options.env, &registries)
            .map_err(StartError::Config)?;
        Gateway::start_with(options, snapshot, registries).await
    }

    /// Starts serving an already loaded config (the CLI loads first to set up logging).
    pub async fn start_with(
        options: StartOptions,
        mut snapshot: Snapshot,
        registries: Registries,
    ) -> Result<GatewayHandle, StartError> {
        snapshot.version = 1;
        // Keys from jwks_url before the first request, when the IdP answers in time.
        config::identity::start_jwks_refresh(&snapshot.providers).await;
        // Probes run on this (control) runtime, off the request workers.
        crate::upstream::health::start_all(&snapshot.upstreams);
        let listen = snapshot.server.listen;
        let worker_count = snapshot
            .server
            .workers
            .unwrap_or_else(workers::default_count);
        let admin_listen = snapshot.admin_listen;
        let main = bind(listen).await?;
        let admin = match admin_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let local_addr = main.local_addr().map_err(|source| StartError::Bind {
            addr: listen,
            source,
        })?;
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
        let https = match snapshot.server.tls.as_ref().map(|tls| tls.listen) {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let tls_addr = https.as_ref().and_then(|l| l.local_addr().ok());

        let metrics = Arc::clone(&registries.metrics);
        metrics.set_config_version(snapshot.version);
        if let Some(tls) = &snapshot.server.tls {
            metrics.set_tls_certificates(tls.expiries());
        }
        snapshot.log_warnings();
        let state = Arc::new(GatewayState {
            snapshot: ArcSwap::from_pointee(snapshot),
            registries,
            config_path: options.config_path,
            env: options.env,
            draining: Default::default(),
            unrouted: metrics.unrouted(),
            metrics,
            reload_lock: Default::default(),
            https: Default::default(),
        });
        let watcher = if options.watch {
            match reload::watch(Arc::clone(&state)) {
                Ok(guard) => Some(guard),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the config files; reload with SIGHUP");
                    None
                }
            }
        } else {
            None
        };
        let (phase_tx, phase_rx) = watch::channel(Phase::Running);
        let open = Arc::new(OpenConnections::default());
        let (workers, worker_threads) =
            Workers::spawn(worker_count, &state, &phase_rx, &open).map_err(StartError::Workers)?;
        let workers = Arc::new(workers);
        state
            .https
            .set_parts(phase_rx.clone(), Arc::clone(&open), &workers);
        if let Some(https) = https {
            state.https.start(https, &state);
        }
        let mut tasks = vec![tokio::spawn(accept_loop(
            main,
            Role::Main,
            Transport::Plain,
            Arc::clone(&state),
            phase_rx.clone(),
            Arc::clone(&open),
            Placement::Workers(workers),
        ))];
        if let Some(admin) = admin {
            tasks.push(tokio::spawn(accept_loop(
                admin,
                Role::Admin,
                Transport::Plain,
                Arc::clone(&state),
                phase_rx,
                // Admin connections stay up through the drain, so shutdown does not wait on them.
                Arc::new(OpenConnections::default()),
                Placement::Here,
            )));
        }
        if let Some(tls) = tls_addr {
            tracing::info!(listen = %tls, "gatehouse listening for HTTPS");
        }
        // The admin field is left out, not logged as `None`, when there is no admin listener.
        match admin_addr {
            Some(admin) => tracing::info!(
                listen = %local_addr,
                admin = %admin,
                workers = worker_count,
                "gatehouse listening"
            ),
            None => tracing::info!(
                listen = %local_addr,
                workers = worker_count,
                "gatehouse listening"
            ),
        }
        Ok(GatewayHandle {
            state,
            local_addr,
            admin_addr,
            phase: phase_tx,
            open,
            tasks,
            workers: worker_threads,
            _watcher: watcher,
        })
    }
}

/// Connections the kernel may queue for a listener before it is accepting them (capped by
/// `net.core.somaxconn`). A burst of thousands of new connections (clients reconnecting after
/// a restart or a failover) would otherwise overflow the queue and see connect timeouts.
const LISTEN_BACKLOG: u32 = 4096;

pub(super) async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // A restarted gateway can bind while connections of the old one sit in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|source| StartError::Bind { addr, source })
}

/// A running gateway. Dropping it stops it at once; `shutdown` stops it gracefully.
pub struct GatewayHandle {
    state: Arc<GatewayState>,
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    phase: watch::Sender<Phase>,
    open: Arc<OpenConnections>,
    tasks: Vec<JoinHandle<()>>,
    /// The connection workers; they end on their own once the phase is `Terminate`.
    workers: Vec<std::thread::JoinHandle<()>>,
    _watcher: Option<reload::WatchGuard>,
}

/// How a graceful shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// Every connection finished within the grace period.
    Drained,
    /// The grace period ended first; this many connections were cut.
    Cut(usize),
}

impl GatewayHandle {
    /// The address of the main listener (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the admin listener, when configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The address of the HTTPS listener (`server.tls.listen`) now, when configured; a reload
    /// can add, move or remove it.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.state.https.local_addr()
    }

    /// The shared state (config snapshot, registries).
    pub fn state(&self) -> &Arc<GatewayState> {
        &self.state
    }

    /// The config in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.snapshot.load_full()
    }

    /// Reloads the config now (what SIGHUP does).
    pub async fn reload(&self) -> ReloadOutcome {
        reload::reload(&self.state, "request").await
    }

    /// Connections currently open on the main listener.
    pub fn open_connections(&self) -> usize {
        self.open.count()
    }

    /// Stops accepting, lets in-flight requests finish for up to `grace` (default
    /// `server.shutdown_grace`), closes idle connections, then cuts whatever is left.
    pub async fn shutdown(mut self, grace: Option<Duration>) -> ShutdownOutcome {
        let grace = grace.unwrap_or_else(|| self.state.snapshot.load().server.shutdown_grace);
        self.state.draining.store(true, Ordering::SeqCst);
        let _ = self.phase.send(Phase::Draining);
        let drained = tokio::time::timeout(grace, self.open.all_closed())
            .await
            .is_ok();
        let outcome = if drained {
            ShutdownOutcome::Drained
        } else {
            ShutdownOutcome::Cut(self.open.count())
        };
        let _ = self.phase.send(Phase::Terminate);
        // The workers drop their connections as they stop; wait so nothing outlives shutdown.
        let workers = std::mem::take(&mut self.workers);
        let _ = tokio::task::spawn_blocking(move || {
            for worker in workers {
                let _ = worker.join();
            }
        })
        .await;
        outcome
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        let _ = self.phase.send(Phase::Terminate);
        for task in &self.tasks {
            task.abort();
        }
        self.state.https.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backlog the kernel reports for the listener on `port` (`ss` shows it as Send-Q).
    fn reported_backlog(port: u16) -> u32 {
        let out = std::process::Command::new("ss")
            .args(["-ltnH", &format!("sport = :{port}")])
            .output()
            .expect("run ss (iproute2)");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().next().expect("the listener is listed");
        line.split_whitespace()
            .nth(2)
            .expect("Send-Q")
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn listeners_queue_bursts_of_new_connections() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .map_or(LISTEN_BACKLOG, |v| {
                v.trim().parse().unwrap_or(LISTEN_BACKLOG)
            });
        assert_eq!(reported_backlog(port), LISTEN_BACKLOG.min(somaxconn));
    }
}
