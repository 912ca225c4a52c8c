//! The access log as a test binary's own tracing subscriber writes it, for tests that look at
//! log lines of an in-process gateway.

use super::eventually;

/// Access-log lines of this test binary, as JSON the way `logging.format: json` writes them.
#[derive(Clone, Default)]
pub struct CapturedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLog {
    type Writer = CapturedLog;

    fn make_writer(&'a self) -> CapturedLog {
        self.clone()
    }
}

impl CapturedLog {
    /// The log every test of this binary writes to, installed on first use.
    pub fn install() -> &'static CapturedLog {
        static LOG: std::sync::OnceLock<CapturedLog> = std::sync::OnceLock::new();
        LOG.get_or_init(|| {
            let log = CapturedLog::default();
            tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_env_filter(tracing_subscriber::EnvFilter::new("gatehouse::access=info"))
                .with_writer(log.clone())
                .try_init()
                .expect("no other logger in this test binary");
            log
        })
    }

    /// The access-log line of the request with `id`, if written by now.
    pub fn find(&self, id: &str) -> Option<serde_json::Value> {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["request_id"] == id)
    }

    /// The access-log line of the request with `id`, once written.
    pub async fn line(&self, id: &str) -> serde_json::Value {
        eventually(&format!("an access-log line for {id}"), || async {
            self.find(id).is_some()
        })
        .await;
        self.find(id).unwrap()
    }
}
