//! Process logging: JSON or text lines on stdout, written by a background thread so a slow
//! terminal or log pipe never blocks the request path.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::snapshot::{LogFormat, LoggingSettings};

/// Log lines waiting for stdout before new ones are dropped.
const LOG_BUFFER_LINES: usize = 16 << 10;

/// Installs the global logger. `RUST_LOG`, when set, overrides `logging.level`. Keep the guard
/// alive for the life of the process: dropping it flushes and stops the writer.
pub fn init(settings: &LoggingSettings) -> WorkerGuard {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new(&settings.level));
    // Lossy: under extreme load a full buffer drops lines rather than stalling requests. The
    // buffer is allocated whole at start; the library's default of 128 000 lines took 4 MiB of
    // every process's memory, while 16 384 lines (512 KiB) still hold a burst of about half a
    // second at 30 000 logged requests per second.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .finish(std::io::stdout());
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
