//! Where `br-daemon run` logs go, and in what form: plain text (ANSI
//! colours only when stderr is a terminal), one JSON object per line for
//! log shippers, or journald's form: each line prefixed with its syslog
//! priority (`<3>` error ... `<7>` debug, sd-daemon(3)), no timestamp of
//! its own, chosen by itself when stderr is the journal (`JOURNAL_STREAM`,
//! systemd.exec(5)).

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// journal when stderr is the journal, else text.
    Auto,
    Text,
    Json,
    Journal,
}

/// The syslog priority journald files a line of `level` under.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// journald's line format: `<priority>target: message fields`.
struct Journal;

impl<S, N> FormatEvent<S, N> for Journal
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        write!(writer, "<{}>{}: ", priority(*meta.level()), meta.target())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Whether stderr is the stream systemd connected to the journal.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream.to_string_lossy() == format!("{}:{}", meta.dev(), meta.ino())
}

/// `auto` made definite for this process.
pub fn resolve(format: LogFormat) -> LogFormat {
    match format {
        LogFormat::Auto if stderr_is_journal() => LogFormat::Journal,
        LogFormat::Auto => LogFormat::Text,
        other => other,
    }
}

/// A subscriber writing `format` to `writer` (RUST_LOG filters, default
/// info); `ansi` only applies to text.
pub fn subscriber<W>(format: LogFormat, writer: W, ansi: bool) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let format = resolve(format);
    let fmt = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_env_filter(filter)
        .with_ansi(ansi && format == LogFormat::Text);
    match format {
        LogFormat::Json => Box::new(fmt.json().flatten_event(true).finish()),
        LogFormat::Journal => Box::new(fmt.event_format(Journal).finish()),
        LogFormat::Auto | LogFormat::Text => Box::new(fmt.finish()),
    }
}

/// Installs the process's logger on stderr.
pub fn init(format: LogFormat) {
    let ansi = std::io::stderr().is_terminal();
    let _ = tracing::subscriber::set_global_default(subscriber(format, std::io::stderr, ansi));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(format: LogFormat, ansi: bool) -> String {
        let out = Captured::default();
        let sink = out.clone();
        let subscriber = subscriber(format, move || sink.clone(), ansi);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(domain = "vpc", "reload refused");
            tracing::error!("XDP detached");
        });
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn journal_lines_carry_their_priority_and_no_timestamp() {
        let text = logged(LogFormat::Journal, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "<4>br_daemon::log::tests: reload refused domain=\"vpc\"",
                "<3>br_daemon::log::tests: XDP detached"
            ]
        );
    }

    #[test]
    fn json_is_one_object_per_line() {
        let text = logged(LogFormat::Json, false);
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["level"], "WARN");
        assert_eq!(first["message"], "reload refused");
        assert_eq!(first["domain"], "vpc");
    }

    #[test]
    fn text_has_escapes_only_for_a_terminal() {
        assert!(!logged(LogFormat::Text, false).contains('\x1b'));
        assert!(logged(LogFormat::Text, true).contains('\x1b'));
    }
}
