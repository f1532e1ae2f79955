//! A span for every database statement, made from sqlx's per-statement event, with its SQL
//! (literals redacted), rows and duration.

use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer as _};
use opentelemetry_sdk::trace::SdkTracer;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;

/// Turns sqlx's event for each finished statement into a span, child of the current span.
/// Statements outside any traced span (Pub/Sub polling, migrations) make no span.
pub(super) struct QuerySpans {
    pub(super) tracer: SdkTracer,
}

#[derive(Default)]
pub(super) struct QueryFields {
    summary: String,
    statement: String,
    rows_returned: Option<u64>,
    rows_affected: Option<u64>,
    elapsed_secs: f64,
}

impl tracing::field::Visit for QueryFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_owned(),
            "db.statement" => self.statement = value.to_owned(),
            _ => {}
        }
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        match field.name() {
            "rows_returned" => self.rows_returned = Some(value),
            "rows_affected" => self.rows_affected = Some(value),
            _ => {}
        }
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed_secs = value;
        }
    }
    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

impl<S> Layer<S> for QuerySpans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let parent = tracing::Span::current().context();
        let parent_span = parent.span();
        let sc = parent_span.span_context();
        if !sc.is_valid() || !sc.is_sampled() {
            return;
        }
        let mut q = QueryFields::default();
        event.record(&mut q);
        let sql = if q.statement.trim().is_empty() {
            q.summary.trim()
        } else {
            q.statement.trim()
        };
        let sql = redact_sql(sql);
        let operation = sql
            .split_whitespace()
            .next()
            .unwrap_or("query")
            .to_ascii_uppercase();
        let end = SystemTime::now();
        let start = end
            .checked_sub(Duration::from_secs_f64(q.elapsed_secs.max(0.0)))
            .unwrap_or(end);
        let mut attributes = vec![
            KeyValue::new("db.system", "postgresql"),
            KeyValue::new("db.operation", operation.clone()),
            KeyValue::new("db.statement", sql),
        ];
        if let Some(rows) = q.rows_returned {
            attributes.push(KeyValue::new("db.rows_returned", rows as i64));
        }
        if let Some(rows) = q.rows_affected {
            attributes.push(KeyValue::new("db.rows_affected", rows as i64));
        }
        if let Some(service) = crate::runtime::context().ok().and_then(|c| c.service) {
            attributes.push(KeyValue::new("service", service));
        }
        let mut span = self
            .tracer
            .span_builder(format!("db {operation}"))
            .with_kind(SpanKind::Client)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        opentelemetry::trace::Span::end_with_timestamp(&mut span, end);
    }
}

/// `sql` with its literals replaced by `?`: string constants, numbers, and dollar-quoted
/// strings. Placeholders (`$1`) and identifiers stay, so the statement still reads.
pub(crate) fn redact_sql(sql: &str) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\'' {
            // '...' with '' as an escaped quote.
            i += 1;
            while i < bytes.len() {
                if bytes[i] == b'\'' {
                    if bytes.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
            out.push('?');
        } else if b == b'$' && bytes.get(i + 1) == Some(&b'$') {
            // $$...$$
            let end = sql[i + 2..]
                .find("$$")
                .map_or(bytes.len(), |e| i + 2 + e + 2);
            out.push('?');
            i = end;
        } else if b.is_ascii_digit() && (i == 0 || !word(bytes[i - 1])) {
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            out.push('?');
        } else {
            let ch = sql[i..].chars().next().expect("i is on a char boundary");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_redacted_and_placeholders_kept() {
        assert_eq!(
            redact_sql("SELECT * FROM users WHERE email = 'a@b.c' AND id = $1 LIMIT 10"),
            "SELECT * FROM users WHERE email = ? AND id = $1 LIMIT ?"
        );
        assert_eq!(
            redact_sql("SELECT 'it''s', t2.x1 FROM t2"),
            "SELECT ?, t2.x1 FROM t2"
        );
        assert_eq!(redact_sql("SELECT $$secret$$, 3.5"), "SELECT ?, ?");
        assert_eq!(redact_sql("SELECT 'é' || naïve"), "SELECT ? || naïve");
        assert_eq!(redact_sql("SELECT 'unterminated"), "SELECT ?");
    }
}
