//! Process logging: JSON or text lines on stdout, written by a background thread so a slow
//! terminal or log pipe never blocks the request path.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::file::LogFormat;
use crate::config::snapshot::LoggingSettings;

/// Installs the global logger. `RUST_LOG`, when set, overrides `logging.level`. Keep the guard
/// alive for the life of the process: dropping it flushes and stops the writer.
pub fn init(settings: &LoggingSettings) -> WorkerGuard {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new(&settings.level));
    // Lossy: under extreme load a full buffer drops lines rather than stalling requests.
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    // Colour codes only for a person at a terminal, never into files or log pipelines.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_ansi(ansi)
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    guard
}
