//! Compression of what the runtime sends to a collector.

/// `body` gzip-compressed, at level 1: most of the saving (OTLP batches repeat their keys and
/// names) for little CPU.
pub(crate) fn gzip(body: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing to a `Vec` does not fail.
    let _ = gz.write_all(body);
    gz.finish().unwrap_or_default()
}
