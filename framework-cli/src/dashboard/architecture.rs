//! The Architecture page: the diagram `crate::graph` draws from the app's source.

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::html::{esc, shell};
use super::{Dashboard, current};

pub(super) async fn page(State(d): State<Dashboard>) -> Response {
    let status = current(&d.status);
    let app = d.app.clone();
    // Read fresh on every visit, so an edit shows on the next reload.
    let graph = tokio::task::spawn_blocking(move || crate::graph::read(&app))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let body = match graph {
        Ok(graph) => format!(
            "<h1>Architecture</h1><p class=\"muted\">Drawn from the source of <code>{}</code>: \
             services with their databases, <span class=\"legend call\">calls</span> and \
             <span class=\"legend pubsub\">Pub/Sub</span>. Also <code>ovation graph \
             --format svg|dot|mermaid</code>.</p><div class=\"diagram\">{}</div>",
            esc(&d.app.display().to_string()),
            crate::graph::to_svg(&graph)
        ),
        Err(e) => format!(
            "<h1>Architecture</h1><p class=\"notice\">The source could not be read: {}</p>",
            esc(&e)
        ),
    };
    shell(&d, "Architecture", "architecture", &status, &body).into_response()
}
