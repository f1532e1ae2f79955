//! A span for every database statement, made from sqlx's per-statement event, with its SQL
//! (literals redacted), rows and duration.

use super::otlp::{Attr, Kind, Span, Status, Text, Value};

#[derive(Default)]
struct QueryFields {
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

/// The span (`span_id`) of the statement sqlx's `event` reports as finished, child of span
/// `parent_span_id` of trace `trace_id` (the span the query ran in), in `service` if the query
/// ran in one.
pub(super) fn query_span(
    event: &tracing::Event<'_>,
    (trace_id, parent_span_id, span_id): (u128, u64, u64),
    service: Option<&'static str>,
) -> Span {
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
    let end = super::otlp::now();
    let elapsed = (q.elapsed_secs.max(0.0) * 1e9) as u64;
    let text = |s: String| Value::Str(Text::from(s));
    let mut attributes = Vec::with_capacity(6);
    attributes.push(Attr {
        key: "db.system",
        value: Value::Str(Text::Static("postgresql")),
    });
    attributes.push(Attr {
        key: "db.operation",
        value: text(operation.clone()),
    });
    let name = Text::from(format!("db {operation}"));
    attributes.push(Attr {
        key: "db.statement",
        value: text(sql),
    });
    for (key, rows) in [
        ("db.rows_returned", q.rows_returned),
        ("db.rows_affected", q.rows_affected),
    ] {
        if let Some(rows) = rows {
            attributes.push(Attr {
                key,
                value: Value::Int(i64::try_from(rows).unwrap_or(i64::MAX)),
            });
        }
    }
    if let Some(service) = service {
        attributes.push(Attr {
            key: "service",
            value: Value::Str(Text::Static(service)),
        });
    }
    Span {
        trace_id,
        span_id,
        parent_span_id,
        sampled: true,
        name,
        kind: Kind::Client,
        start: end.saturating_sub(elapsed),
        end,
        attributes,
        events: Vec::new(),
        status: Status::Unset,
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
