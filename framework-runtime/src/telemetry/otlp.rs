//! The exported span, and OTLP's trace messages written straight from it.
//!
//! A span is built by [`super::layer`] as it happens: static `&str` keys from the `tracing`
//! fields, values as recorded. At export, [`request`] writes the protobuf of an
//! `ExportTraceServiceRequest` (field numbers as in `opentelemetry/proto/trace/v1/trace.proto`
//! and its collector service) from those spans in one pass, without building the messages as
//! structs first. Every length is known before it is written, so the output is what any
//! protobuf encoder writes.

/// A span's text (its name, a string attribute): static, or copied from what `tracing` lent —
/// inline when short, as most names, services, methods and paths are, so recording them
/// allocates nothing.
#[derive(Clone)]
pub(crate) enum Text {
    Static(&'static str),
    Short(u8, [u8; SHORT]),
    Owned(Box<str>),
}

/// The longest text kept inline.
const SHORT: usize = 30;

impl Text {
    /// A copy of `s`.
    pub(crate) fn copy(s: &str) -> Text {
        if s.len() <= SHORT {
            let mut buf = [0; SHORT];
            buf[..s.len()].copy_from_slice(s.as_bytes());
            Text::Short(s.len() as u8, buf)
        } else {
            Text::Owned(s.into())
        }
    }

    /// The UTF-8 bytes, unchecked: what the encoder writes (the `str` was checked when copied
    /// in; checking it again at each look cost as much as encoding it).
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Text::Static(s) => s.as_bytes(),
            Text::Short(len, buf) => &buf[..usize::from(*len)],
            Text::Owned(s) => s.as_bytes(),
        }
    }

    /// What `value` writes, as `format!("{value:?}")` would (a `%` field's `Debug` is its
    /// `Display`), without allocating when it is short.
    pub(crate) fn debug(value: &dyn std::fmt::Debug) -> Text {
        use std::fmt::Write as _;
        let mut out = Writer::Short(0, [0; SHORT]);
        let _ = write!(out, "{value:?}");
        match out {
            Writer::Short(len, buf) => Text::Short(len, buf),
            Writer::Long(s) => Text::Owned(s.into_boxed_str()),
        }
    }
}

/// Writes inline until it no longer fits.
enum Writer {
    Short(u8, [u8; SHORT]),
    Long(String),
}

impl std::fmt::Write for Writer {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        match self {
            Writer::Short(len, buf) => {
                let at = usize::from(*len);
                if at + s.len() <= SHORT {
                    buf[at..at + s.len()].copy_from_slice(s.as_bytes());
                    *len += s.len() as u8;
                } else {
                    let mut long = String::with_capacity(at + s.len() + 16);
                    // Whole `str`s were written: the bytes so far are UTF-8.
                    long.push_str(std::str::from_utf8(&buf[..at]).unwrap_or_default());
                    long.push_str(s);
                    *self = Writer::Long(long);
                }
            }
            Writer::Long(long) => long.push_str(s),
        }
        Ok(())
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Text::Static(s) => s,
            // Only whole `str`s are copied in.
            Text::Short(len, buf) => {
                std::str::from_utf8(&buf[..usize::from(*len)]).unwrap_or_default()
            }
            Text::Owned(s) => s,
        }
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Text {
        Text::Static(s)
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text::Owned(s.into_boxed_str())
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// An attribute's value: the four kinds `tracing` fields record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Str(Text),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// One attribute. Keys are `tracing` field names, which are static.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Attr {
    pub(crate) key: &'static str,
    pub(crate) value: Value,
}

/// OTLP's span kinds (`Span.SpanKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

impl Kind {
    /// `otel.kind`'s value, as `tracing-opentelemetry` reads it.
    pub(crate) fn parse(s: &str) -> Option<Kind> {
        [
            ("internal", Kind::Internal),
            ("server", Kind::Server),
            ("client", Kind::Client),
            ("producer", Kind::Producer),
            ("consumer", Kind::Consumer),
        ]
        .into_iter()
        .find_map(|(name, kind)| s.eq_ignore_ascii_case(name).then_some(kind))
    }
}

/// Something that happened inside a span: a log line written in it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub(crate) time: u64,
    pub(crate) name: Text,
    pub(crate) attributes: Vec<Attr>,
}

/// A span as exported. The layer keeps one in each traced `tracing` span's extensions, fills
/// it in as fields are recorded and events happen, and queues it when the span closes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Span {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    /// `0`: a root.
    pub(crate) parent_span_id: u64,
    pub(crate) sampled: bool,
    pub(crate) name: Text,
    pub(crate) kind: Kind,
    /// Unix time in nanoseconds.
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) attributes: Vec<Attr>,
    pub(crate) events: Vec<Event>,
    pub(crate) status: Status,
}

/// `Status.StatusCode`: unset unless the span says (`otel.status_code`) or an error was logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Unset = 0,
    Ok = 1,
    Error = 2,
}

impl Span {
    /// Sets `key` to `value`, replacing what an earlier record gave it.
    pub(crate) fn set(&mut self, key: &'static str, value: Value) {
        match self.attributes.iter_mut().find(|a| a.key == key) {
            Some(a) => a.value = value,
            None => self.attributes.push(Attr { key, value }),
        }
    }
}

/// Unix time now, in nanoseconds.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The protobuf of an `ExportTraceServiceRequest` carrying `spans`, from the process
/// (resource) named `process`, as instrumentation scope `ovation`.
#[cfg(test)]
pub(crate) fn request(process: &str, spans: &[Span]) -> Vec<u8> {
    let mut encoded = Vec::new();
    for span in spans {
        put_span_field(&mut encoded, span);
    }
    request_of_encoded(process, &encoded)
}

/// `span` as one element of `ScopeSpans.spans` (its key, length and message): what
/// [`request_of_encoded`] takes, any number of them one after the other.
pub(crate) fn put_span_field(out: &mut Vec<u8>, span: &Span) {
    let len = span_len(span);
    out.reserve(nested_len(len));
    key(out, 2, LEN);
    varint(out, len as u64);
    put_span(out, span);
}

/// The protobuf of an `ExportTraceServiceRequest` carrying the spans `encoded` by
/// [`put_span_field`], from the process (resource) named `process`, as instrumentation scope
/// `ovation`.
pub(crate) fn request_of_encoded(process: &str, encoded: &[u8]) -> Vec<u8> {
    let service = [Attr {
        key: "service.name",
        value: Value::Str(Text::copy(process)),
    }];
    let resource = attrs_len(&service);
    const SCOPE: &str = "ovation";
    let scope = str_len(SCOPE);
    let scope_spans = nested_len(scope) + encoded.len();
    let resource_spans = nested_len(resource) + nested_len(scope_spans);

    let mut out = Vec::with_capacity(nested_len(resource_spans));
    key(&mut out, 1, LEN);
    varint(&mut out, resource_spans as u64);
    key(&mut out, 1, LEN);
    varint(&mut out, resource as u64);
    put_attrs(&mut out, 1, &service);
    key(&mut out, 2, LEN);
    varint(&mut out, scope_spans as u64);
    key(&mut out, 1, LEN);
    varint(&mut out, scope as u64);
    put_str(&mut out, 1, SCOPE);
    out.extend_from_slice(encoded);
    debug_assert_eq!(out.len(), out.capacity());
    out
}

// Wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;

fn key(out: &mut Vec<u8>, field: u8, wire: u8) {
    // Every field number here is below 16: the key is one byte.
    out.push((field << 3) | wire);
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    // 7 bits a byte; 0 takes one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// A length-delimited field of `len` bytes, with its key and length.
fn nested_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn bytes_len(b: &[u8]) -> usize {
    if b.is_empty() { 0 } else { nested_len(b.len()) }
}

fn str_len(s: &str) -> usize {
    if s.is_empty() { 0 } else { nested_len(s.len()) }
}

fn put_str(out: &mut Vec<u8>, field: u8, s: &str) {
    put_bytes(out, field, s.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, field: u8, b: &[u8]) {
    if !b.is_empty() {
        key(out, field, LEN);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
}

fn put_fixed64(out: &mut Vec<u8>, field: u8, v: u64) {
    if v != 0 {
        key(out, field, FIXED64);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn fixed64_len(v: u64) -> usize {
    if v == 0 { 0 } else { 9 }
}

fn put_varint_field(out: &mut Vec<u8>, field: u8, v: u64) {
    if v != 0 {
        key(out, field, VARINT);
        varint(out, v);
    }
}

fn varint_field_len(v: u64) -> usize {
    if v == 0 { 0 } else { 1 + varint_len(v) }
}

/// `AnyValue`'s length.
fn value_len(v: &Value) -> usize {
    // A oneof field is written even when it holds its type's default.
    match v {
        Value::Str(s) => nested_len(s.bytes().len()),
        Value::Bool(_) => 2,
        Value::Int(i) => 1 + varint_len(*i as u64),
        Value::Float(_) => 9,
    }
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Str(s) => {
            let s = s.bytes();
            key(out, 1, LEN);
            varint(out, s.len() as u64);
            out.extend_from_slice(s);
        }
        Value::Bool(b) => {
            key(out, 2, VARINT);
            out.push(u8::from(*b));
        }
        Value::Int(i) => {
            key(out, 3, VARINT);
            varint(out, *i as u64);
        }
        Value::Float(f) => {
            key(out, 4, FIXED64);
            out.extend_from_slice(&f.to_le_bytes());
        }
    }
}

/// `KeyValue`'s length.
fn attr_len(a: &Attr) -> usize {
    str_len(a.key) + nested_len(value_len(&a.value))
}

/// The length of `attrs` as a repeated `KeyValue` field.
fn attrs_len(attrs: &[Attr]) -> usize {
    attrs.iter().map(|a| nested_len(attr_len(a))).sum()
}

fn put_attrs(out: &mut Vec<u8>, field: u8, attrs: &[Attr]) {
    for a in attrs {
        key(out, field, LEN);
        varint(out, attr_len(a) as u64);
        put_str(out, 1, a.key);
        key(out, 2, LEN);
        varint(out, value_len(&a.value) as u64);
        put_value(out, &a.value);
    }
}

fn event_len(e: &Event) -> usize {
    fixed64_len(e.time) + bytes_len(e.name.bytes()) + attrs_len(&e.attributes)
}

fn status_len(s: Status) -> usize {
    varint_field_len(s as u64)
}

fn span_len(s: &Span) -> usize {
    nested_len(16)
        + nested_len(8)
        + if s.parent_span_id == 0 {
            0
        } else {
            nested_len(8)
        }
        + bytes_len(s.name.bytes())
        + varint_field_len(s.kind as u64)
        + fixed64_len(s.start)
        + fixed64_len(s.end)
        + attrs_len(&s.attributes)
        + s.events
            .iter()
            .map(|e| nested_len(event_len(e)))
            .sum::<usize>()
        + match s.status {
            Status::Unset => 0,
            status => nested_len(status_len(status)),
        }
}

fn put_span(out: &mut Vec<u8>, s: &Span) {
    put_bytes(out, 1, &s.trace_id.to_be_bytes());
    put_bytes(out, 2, &s.span_id.to_be_bytes());
    if s.parent_span_id != 0 {
        put_bytes(out, 4, &s.parent_span_id.to_be_bytes());
    }
    put_bytes(out, 5, s.name.bytes());
    put_varint_field(out, 6, s.kind as u64);
    put_fixed64(out, 7, s.start);
    put_fixed64(out, 8, s.end);
    put_attrs(out, 9, &s.attributes);
    for e in &s.events {
        key(out, 11, LEN);
        varint(out, event_len(e) as u64);
        put_fixed64(out, 1, e.time);
        put_bytes(out, 2, e.name.bytes());
        put_attrs(out, 3, &e.attributes);
    }
    if s.status != Status::Unset {
        key(out, 15, LEN);
        varint(out, status_len(s.status) as u64);
        put_varint_field(out, 3, s.status as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use prost::Message as _;

    fn span(n: u64) -> Span {
        Span {
            trace_id: 0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c,
            span_id: 0xb7ad_6b71_6920_3331 + n,
            parent_span_id: if n == 0 { 0 } else { 0xb7ad_6b71_6920_3331 },
            sampled: true,
            name: format!("span {n} {}", "é".repeat(n as usize * 40)).into(),
            kind: Kind::Server,
            start: 1_700_000_000_000_000_000 + n,
            end: 1_700_000_000_000_500_000 + n,
            attributes: vec![
                Attr {
                    key: "service",
                    value: Value::Str("orders".into()),
                },
                Attr {
                    key: "http.status_code",
                    value: Value::Int(200),
                },
                Attr {
                    key: "negative",
                    value: Value::Int(-5),
                },
                Attr {
                    key: "ratio",
                    value: Value::Float(0.25),
                },
                Attr {
                    key: "remote",
                    value: Value::Bool(false),
                },
                Attr {
                    key: "empty",
                    value: Value::Str("".into()),
                },
            ],
            events: vec![Event {
                time: 1_700_000_000_000_100_000,
                name: "email sent".into(),
                attributes: vec![Attr {
                    key: "level",
                    value: Value::Str("INFO".into()),
                }],
            }],
            status: if n == 1 { Status::Error } else { Status::Unset },
        }
    }

    #[test]
    fn what_is_written_decodes_as_otlp_with_every_field() {
        let spans: Vec<Span> = (0..3).map(span).collect();
        let bytes = request("shop-app", &spans);
        let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        // A canonical encoder writes the same bytes for the same message.
        assert_eq!(decoded.encode_to_vec(), bytes);

        let rs = &decoded.resource_spans[0];
        let service = &rs.resource.as_ref().unwrap().attributes[0];
        assert_eq!(service.key, "service.name");
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().unwrap().name, "ovation");
        assert_eq!(ss.spans.len(), 3);
        for (got, want) in ss.spans.iter().zip(&spans) {
            assert_eq!(got.trace_id, want.trace_id.to_be_bytes());
            assert_eq!(got.span_id, want.span_id.to_be_bytes());
            let parent = if want.parent_span_id == 0 {
                Vec::new()
            } else {
                want.parent_span_id.to_be_bytes().to_vec()
            };
            assert_eq!(got.parent_span_id, parent);
            assert_eq!(got.name, *want.name);
            assert_eq!(got.kind, 2);
            assert_eq!(
                (got.start_time_unix_nano, got.end_time_unix_nano),
                (want.start, want.end)
            );
            let values: Vec<_> = got
                .attributes
                .iter()
                .map(|kv| (kv.key.as_str(), kv.value.as_ref().unwrap().value.clone()))
                .collect();
            assert_eq!(
                values,
                [
                    (
                        "service",
                        Some(any_value::Value::StringValue("orders".into()))
                    ),
                    ("http.status_code", Some(any_value::Value::IntValue(200))),
                    ("negative", Some(any_value::Value::IntValue(-5))),
                    ("ratio", Some(any_value::Value::DoubleValue(0.25))),
                    ("remote", Some(any_value::Value::BoolValue(false))),
                    ("empty", Some(any_value::Value::StringValue(String::new()))),
                ]
            );
            assert_eq!(got.events[0].name, "email sent");
            assert_eq!(got.events[0].attributes[0].key, "level");
            assert_eq!(
                got.status.as_ref().map_or(0, |s| s.code),
                want.status as i32
            );
        }
    }

    #[test]
    fn text_is_kept_inline_when_short_and_whole_either_way() {
        let short = Text::copy("orders.create");
        assert!(matches!(short, Text::Short(..)));
        assert_eq!(&*short, "orders.create");
        let exact = "é".repeat(SHORT / 2);
        assert!(matches!(Text::copy(&exact), Text::Short(..)));
        let long = "/orders/0af76519-16cd-43dd-8448-eb211c80319c";
        assert!(matches!(Text::copy(long), Text::Owned(_)));
        assert_eq!(&*Text::copy(long), long);
        // Written in pieces, as `Display` implementations do, across the inline limit.
        let spilled = Text::debug(&format_args!("{} {}", "call users.get", "é".repeat(20)));
        assert_eq!(&*spilled, format!("call users.get {}", "é".repeat(20)));
        assert!(matches!(
            Text::debug(&format_args!("deliver {}", 7)),
            Text::Short(..)
        ));
        assert_eq!(Kind::parse("SERVER"), Some(Kind::Server));
        assert_eq!(Kind::parse("nope"), None);
    }

    #[test]
    fn varint_lengths_match_what_is_written() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
    }
}
