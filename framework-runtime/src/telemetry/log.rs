//! The terminal's log line: time, level, where it was written (the running code's service and
//! endpoint or subscription), message and fields.

/// A log line: time, level, where it was written (`service.endpoint`, `service.subscription`,
/// or `service`, from the task's Ovation context), the message and its fields.
pub(super) struct LogLine;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for LogLine
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = *event.metadata().level();
        let (color, reset) = match (writer.has_ansi_escapes(), level) {
            (false, _) => ("", ""),
            (true, tracing::Level::ERROR) => ("\x1b[31m", "\x1b[0m"),
            (true, tracing::Level::WARN) => ("\x1b[33m", "\x1b[0m"),
            (true, tracing::Level::INFO) => ("\x1b[32m", "\x1b[0m"),
            (true, _) => ("\x1b[34m", "\x1b[0m"),
        };
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ");
        write!(writer, "{now} {color}{level:>5}{reset} ")?;
        match crate::runtime::log_context() {
            Some((service, Some(label))) => write!(writer, "{service}.{label}: ")?,
            Some((service, None)) => write!(writer, "{service}: ")?,
            None => {}
        }
        tracing_subscriber::fmt::FormatFields::format_fields(ctx, writer.by_ref(), event)?;
        writeln!(writer)
    }
}
