//! Static files (`ovation::static_files!`): a folder embedded in the binary at build time and
//! served under a path prefix by the service that declares it, public.
//!
//! A request names a file by its path under the prefix, percent-decoded; `.` and `..`
//! segments, backslashes and NUL are 404 before any lookup, and the lookup is an exact match
//! in the embedded list, so nothing outside the folder can be named. A path ending in `/` (or
//! the prefix itself) serves that folder's `index.html`. Answers carry the content type of the
//! file's extension, an `ETag` (a digest of the content, made at build time) and the file's
//! `Last-Modified`; `If-None-Match` / `If-Modified-Since` that still hold get `304`.
//! `Cache-Control: no-cache` makes browsers revalidate, so a new build is seen at once.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};

use super::wire::not_found_response;
use crate::registry::{Access, DynEndpoint, EndpointInfo, EndpointKind, Method};
use crate::runtime::Runtime;

/// One embedded file. Made by `static_files!`.
#[doc(hidden)]
#[derive(Debug)]
pub struct StaticFile {
    /// Its path under the folder, `/`-separated, no leading `/`.
    pub path: &'static str,
    pub bytes: &'static [u8],
    /// Quoted, as the header carries it.
    pub etag: &'static str,
    /// Unix seconds.
    pub modified: i64,
}

/// An embedded folder and the prefix it is served under. Made by `static_files!`.
#[doc(hidden)]
#[derive(Debug)]
pub struct StaticDir {
    pub module: &'static str,
    /// As written, no trailing `/` (except the root, `/`).
    pub prefix: &'static str,
    pub files: &'static [StaticFile],
    pub location: &'static str,
    /// The folder the files were embedded from (absolute), in the app's debug builds: while it
    /// exists, files are read from it, so a file added or edited since the build is served
    /// as it is now (cargo does not rebuild for a new file in a folder).
    pub folder: Option<&'static str>,
}

/// One of a [`StaticDir`]'s routes (the prefix, the prefix with `/`, everything under it),
/// registered as an endpoint.
#[doc(hidden)]
#[derive(Debug)]
pub struct StaticRoute {
    pub dir: &'static StaticDir,
    pub path: &'static str,
}

impl DynEndpoint for StaticRoute {
    fn info(&self) -> EndpointInfo {
        EndpointInfo {
            service: crate::runtime::service_of(self.dir.module),
            name: "static_files",
            method: Method::Get,
            path: self.path,
            access: Access::Public,
            path_params: if self.path.ends_with("*path") {
                &["path"]
            } else {
                &[]
            },
            location: self.dir.location,
            module: self.dir.module,
            no_content: false,
            tags: &[],
            kind: EndpointKind::Static,
        }
    }

    fn request_schema(&self) -> Option<schemars::Schema> {
        None
    }

    fn response_schema(&self) -> Option<schemars::Schema> {
        None
    }

    fn path_param_schemas(&self) -> Vec<Option<schemars::Schema>> {
        Vec::new()
    }

    fn route(&self, _: &'static Runtime) -> MethodRouter {
        let dir = self.dir;
        axum::routing::on(MethodFilter::GET, move |req: Request| async move {
            serve(dir, req).await
        })
    }
}

/// A file found for a request: embedded, or read from the folder.
struct Found {
    path: String,
    bytes: Body,
    etag: String,
    /// Unix seconds.
    modified: i64,
}

async fn serve(dir: &StaticDir, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let (method, path) = (parts.method.as_str(), parts.uri.path());
    let found = match wanted(dir, path) {
        None => None,
        Some(wanted) => match dir.folder.filter(|f| std::path::Path::new(f).is_dir()) {
            Some(folder) => from_folder(folder, wanted).await,
            None => dir.files.iter().find(|f| f.path == wanted).map(|f| Found {
                path: wanted,
                bytes: Body::from(f.bytes),
                etag: f.etag.to_owned(),
                modified: f.modified,
            }),
        },
    };
    let Some(file) = found else {
        return not_found_response(method, path);
    };
    let headers = &parts.headers;
    let fresh = match headers.get(header::IF_NONE_MATCH) {
        Some(tags) => tags.to_str().is_ok_and(|tags| {
            tags.split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == "*" || t == file.etag)
        }),
        None => headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
            .is_some_and(|since| since.timestamp() >= file.modified),
    };
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = Response::new(file.bytes);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(&file.path)),
        );
        response
    };
    let h = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&file.etag) {
        h.insert(header::ETAG, etag);
    }
    if let Some(date) = chrono::DateTime::from_timestamp(file.modified, 0)
        && let Ok(date) =
            HeaderValue::from_str(&date.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
    {
        h.insert(header::LAST_MODIFIED, date);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The file `wanted` of `folder` as it is now, if it is a file inside the folder (a link
/// leading out of it is not followed).
async fn from_folder(folder: &str, wanted: String) -> Option<Found> {
    let root = tokio::fs::canonicalize(folder).await.ok()?;
    let file = tokio::fs::canonicalize(root.join(&wanted)).await.ok()?;
    if !file.starts_with(&root) {
        return None;
    }
    let metadata = tokio::fs::metadata(&file).await.ok()?;
    if !metadata.is_file() {
        return None;
    }
    let bytes = tokio::fs::read(&file).await.ok()?;
    let modified = metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64);
    Some(Found {
        etag: etag(&bytes),
        path: wanted,
        bytes: Body::from(bytes),
        modified,
    })
}

/// A file's `ETag`: a digest of its content (SipHash with fixed keys), as `static_files!`
/// makes it at build time.
fn etag(bytes: &Vec<u8>) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    bytes.hash(&mut hasher);
    format!("\"{:016x}-{:x}\"", hasher.finish(), bytes.len())
}

/// The path under the folder that `path` (the request's, prefix included) names, if any.
fn wanted(dir: &StaticDir, path: &str) -> Option<String> {
    let rest = if dir.prefix == "/" {
        path.strip_prefix('/')?
    } else {
        let rest = path.strip_prefix(dir.prefix)?;
        if rest.is_empty() {
            ""
        } else {
            rest.strip_prefix('/')?
        }
    };
    let decoded = percent_encoding::percent_decode_str(rest)
        .decode_utf8()
        .ok()?;
    if decoded.contains(['\\', '\0'])
        || decoded
            .split('/')
            .any(|segment| segment == "." || segment == "..")
    {
        return None;
    }
    Some(if decoded.is_empty() || decoded.ends_with('/') {
        format!("{decoded}index.html")
    } else {
        decoded.into_owned()
    })
}

/// The content type of a file, by its extension.
fn content_type(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "pdf" => "application/pdf",
        "webmanifest" => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static FILES: [StaticFile; 2] = [
        StaticFile {
            path: "index.html",
            bytes: b"<h1>hi</h1>",
            etag: "\"a\"",
            modified: 0,
        },
        StaticFile {
            path: "css/site.css",
            bytes: b"h1{}",
            etag: "\"b\"",
            modified: 0,
        },
    ];
    static DIR: StaticDir = StaticDir {
        module: "app::web",
        prefix: "/assets",
        files: &FILES,
        location: "test",
        folder: None,
    };

    #[test]
    fn lookups_are_exact_and_refuse_traversal() {
        let found = |p: &str| {
            let wanted = wanted(&DIR, p)?;
            DIR.files.iter().find(|f| f.path == wanted).map(|f| f.path)
        };
        assert_eq!(found("/assets"), Some("index.html"));
        assert_eq!(found("/assets/"), Some("index.html"));
        assert_eq!(found("/assets/css/site.css"), Some("css/site.css"));
        assert_eq!(found("/assets/css%2Fsite.css"), Some("css/site.css"));
        assert_eq!(found("/assets/css/../index.html"), None);
        assert_eq!(found("/assets/css/%2e%2e/index.html"), None);
        assert_eq!(found("/assets/..%2Findex.html"), None);
        assert_eq!(found("/assets/css\\site.css"), None);
        assert_eq!(found("/assetsx/index.html"), None);
        assert_eq!(found("/assets/missing.js"), None);
        assert_eq!(content_type("a/b.CSS"), "text/css; charset=utf-8");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}
