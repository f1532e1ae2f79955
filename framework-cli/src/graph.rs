//! The app's architecture, read from its source with `syn`: services, their databases, calls
//! between services, and topics with their publishers and subscribers. Drawn as SVG for the
//! dashboard, or written as Graphviz DOT or Mermaid (`ovation graph --format svg|dot|mermaid`).
//!
//! A service is a top-level module of the app crate (`src/<name>/mod.rs` or `src/<name>.rs`)
//! that declares an `#[api]`, a `database!`, a `topic!` or a `#[subscription]`. A call is a
//! call expression whose path names another service (`users::get(..)`,
//! `crate::users::get(..)`); a publish is `.publish(..)`, `.publish_batch(..)` or
//! `.publish_in(..)` on a topic static; a subscription is `#[subscription(topic = ..)]`. Code
//! under `#[cfg(test)]` is left out: tests are not the architecture.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// What the source says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Graph {
    /// Service → whether it has a database.
    pub services: BTreeMap<String, bool>,
    /// (caller, callee) service pairs.
    pub calls: BTreeSet<(String, String)>,
    /// Topic name → the service declaring it.
    pub topics: BTreeMap<String, String>,
    /// (service, topic) pairs.
    pub publishes: BTreeSet<(String, String)>,
    /// (topic, service) pairs.
    pub subscribes: BTreeSet<(String, String)>,
}

/// Reads the app whose crate root is `<app>/src`.
pub fn read(app: &Path) -> Result<Graph, String> {
    let src = app.join("src");
    let root = ["lib.rs", "main.rs"]
        .iter()
        .map(|f| src.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{} has no src/lib.rs or src/main.rs", app.display()))?;
    let root_file = parse(&root)?;
    // Top-level modules: `mod x;` in the crate root, found as src/x/mod.rs or src/x.rs.
    let mut modules: BTreeMap<String, Vec<syn::File>> = BTreeMap::new();
    for item in &root_file.items {
        if let syn::Item::Mod(m) = item
            && m.content.is_none()
            && !is_test(&m.attrs)
        {
            let name = m.ident.to_string();
            let files = module_files(&src, &name);
            let parsed = files
                .iter()
                .map(|f| parse(f))
                .collect::<Result<Vec<_>, _>>()?;
            modules.insert(name, parsed);
        }
    }
    // Topic statics (by name) → topic, across the app, for publishes through any path.
    let mut graph = Graph::default();
    let mut topic_statics: BTreeMap<String, String> = BTreeMap::new();
    for (module, files) in &modules {
        let mut scan = Declarations::default();
        for file in files {
            scan.visit_file(file);
        }
        if scan.is_service {
            graph.services.insert(module.clone(), scan.has_database);
        }
        for (ident, topic) in scan.topics {
            graph.topics.insert(topic.clone(), module.clone());
            topic_statics.insert(ident, topic);
        }
    }
    let services: BTreeSet<String> = graph.services.keys().cloned().collect();
    for (module, files) in &modules {
        if !services.contains(module) {
            continue;
        }
        let mut uses = Uses {
            me: module,
            services: &services,
            topic_statics: &topic_statics,
            calls: BTreeSet::new(),
            publishes: BTreeSet::new(),
            subscribes: BTreeSet::new(),
        };
        for file in files {
            uses.visit_file(file);
        }
        graph
            .calls
            .extend(uses.calls.into_iter().map(|c| (module.clone(), c)));
        graph
            .publishes
            .extend(uses.publishes.into_iter().map(|t| (module.clone(), t)));
        graph
            .subscribes
            .extend(uses.subscribes.into_iter().map(|t| (t, module.clone())));
    }
    Ok(graph)
}

fn parse(path: &Path) -> Result<syn::File, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    syn::parse_file(&text).map_err(|e| format!("{} does not parse: {e}", path.display()))
}

/// Every `.rs` file of top-level module `name`.
fn module_files(src: &Path, name: &str) -> Vec<PathBuf> {
    let single = src.join(format!("{name}.rs"));
    let mut files = Vec::new();
    if single.is_file() {
        files.push(single);
    }
    let mut stack = vec![src.join(name)];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

fn last_ident(path: &syn::Path) -> Option<String> {
    path.segments.last().map(|s| s.ident.to_string())
}

/// What a module declares: endpoints, a database, topics.
#[derive(Default)]
struct Declarations {
    is_service: bool,
    has_database: bool,
    /// Static ident → topic name.
    topics: Vec<(String, String)>,
}

impl<'ast> Visit<'ast> for Declarations {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if !is_test(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if f.attrs
            .iter()
            .any(|a| last_ident(a.path()).is_some_and(|n| n == "api" || n == "subscription"))
        {
            self.is_service = true;
        }
    }
    fn visit_item_static(&mut self, s: &'ast syn::ItemStatic) {
        if let syn::Expr::Macro(m) = &*s.expr {
            match last_ident(&m.mac.path).as_deref() {
                Some("database") => {
                    self.is_service = true;
                    self.has_database = true;
                }
                Some("topic") => {
                    if let Ok(name) = m.mac.parse_body_with(|input: syn::parse::ParseStream<'_>| {
                        let name: syn::LitStr = input.parse()?;
                        let _: proc_macro2::TokenStream = input.parse()?;
                        Ok(name.value())
                    }) {
                        self.is_service = true;
                        self.topics.push((s.ident.to_string(), name));
                    }
                }
                _ => {}
            }
        }
    }
}

/// What a service's code uses: other services, topics.
struct Uses<'a> {
    me: &'a str,
    services: &'a BTreeSet<String>,
    topic_statics: &'a BTreeMap<String, String>,
    calls: BTreeSet<String>,
    publishes: BTreeSet<String>,
    subscribes: BTreeSet<String>,
}

impl<'ast> Visit<'ast> for Uses<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if !is_test(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if is_test(&f.attrs) {
            return;
        }
        for attr in &f.attrs {
            if last_ident(attr.path()).as_deref() == Some("subscription") {
                let _ = attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("topic") {
                        let value: syn::Path = meta.value()?.parse()?;
                        if let Some(topic) =
                            last_ident(&value).and_then(|i| self.topic_statics.get(&i))
                        {
                            self.subscribes.insert(topic.clone());
                        }
                    } else if meta.input.peek(syn::Token![=]) {
                        let _: syn::Expr = meta.value()?.parse()?;
                    }
                    Ok(())
                });
            }
        }
        syn::visit::visit_item_fn(self, f);
    }
    fn visit_expr_call(&mut self, call: &'ast syn::ExprCall) {
        if let syn::Expr::Path(p) = &*call.func {
            let segments: Vec<String> = p
                .path
                .segments
                .iter()
                .map(|s| s.ident.to_string())
                .collect();
            let named = segments
                .iter()
                .take(segments.len().saturating_sub(1))
                .find(|s| *s != "crate" && *s != "self" && *s != "super");
            if let Some(service) = named
                && self.services.contains(service)
                && service != self.me
            {
                self.calls.insert(service.clone());
            }
        }
        syn::visit::visit_expr_call(self, call);
    }
    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        let method = call.method.to_string();
        if matches!(method.as_str(), "publish" | "publish_batch" | "publish_in")
            && let syn::Expr::Path(p) = &*call.receiver
            && let Some(topic) = last_ident(&p.path).and_then(|i| self.topic_statics.get(&i))
        {
            self.publishes.insert(topic.clone());
        }
        syn::visit::visit_expr_method_call(self, call);
    }
}

/// Graphviz DOT.
pub fn to_dot(g: &Graph) -> String {
    let mut out = String::from("digraph app {\n  rankdir=LR;\n  node [fontname=\"sans-serif\"];\n");
    for (service, has_db) in &g.services {
        let label = if *has_db {
            format!("{service}\\n[database]")
        } else {
            service.clone()
        };
        let _ = writeln!(
            out,
            "  \"{service}\" [shape=box, style=rounded, label=\"{label}\"];"
        );
    }
    for topic in g.topics.keys() {
        let _ = writeln!(
            out,
            "  \"topic:{topic}\" [shape=ellipse, label=\"{topic}\"];"
        );
    }
    for (from, to) in &g.calls {
        let _ = writeln!(out, "  \"{from}\" -> \"{to}\";");
    }
    for (service, topic) in &g.publishes {
        let _ = writeln!(out, "  \"{service}\" -> \"topic:{topic}\" [style=dashed];");
    }
    for (topic, service) in &g.subscribes {
        let _ = writeln!(out, "  \"topic:{topic}\" -> \"{service}\" [style=dashed];");
    }
    out.push_str("}\n");
    out
}

/// A Mermaid flowchart.
pub fn to_mermaid(g: &Graph) -> String {
    let id = |name: &str| name.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    let mut out = String::from("flowchart LR\n");
    for (service, has_db) in &g.services {
        let db = if *has_db { "<br/>[database]" } else { "" };
        let _ = writeln!(out, "  {}[\"{service}{db}\"]", id(service));
    }
    for topic in g.topics.keys() {
        let _ = writeln!(out, "  topic_{}([\"{topic}\"])", id(topic));
    }
    for (from, to) in &g.calls {
        let _ = writeln!(out, "  {} --> {}", id(from), id(to));
    }
    for (service, topic) in &g.publishes {
        let _ = writeln!(out, "  {} -.-> topic_{}", id(service), id(topic));
    }
    for (topic, service) in &g.subscribes {
        let _ = writeln!(out, "  topic_{} -.-> {}", id(topic), id(service));
    }
    out
}

/// A box of the drawing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Rect {
    pub fn overlaps(&self, o: &Rect) -> bool {
        self.x < o.x + o.w && o.x < self.x + self.w && self.y < o.y + o.h && o.y < self.y + self.h
    }
}

const CHAR_W: f64 = 8.0;
const BOX_H: f64 = 56.0;
const COL_GAP: f64 = 90.0;
const ROW_GAP: f64 = 36.0;
const MARGIN: f64 = 24.0;

/// Where each node goes: callers left of what they call (columns by longest call path),
/// topics in the column after their publisher, nodes of a column stacked without overlap.
pub fn layout(g: &Graph) -> BTreeMap<String, Rect> {
    // Columns: a callee right of its callers, a topic right of its publishers, a subscriber
    // right of its topic; relaxed until stable (bounded, so a cycle cannot loop forever).
    let limit = g.services.len() + g.topics.len() + 2;
    let mut column: BTreeMap<String, usize> = g.services.keys().map(|s| (s.clone(), 0)).collect();
    let mut topic_col: BTreeMap<String, usize> = g.topics.keys().map(|t| (t.clone(), 1)).collect();
    for _ in 0..limit {
        let mut changed = false;
        let mut raise = |map: &mut BTreeMap<String, usize>, key: &str, at_least: usize| {
            if at_least < limit && map[key] < at_least {
                map.insert(key.to_owned(), at_least);
                changed = true;
            }
        };
        for (from, to) in &g.calls {
            let at_least = column[from] + 1;
            raise(&mut column, to, at_least);
        }
        for (service, topic) in &g.publishes {
            let at_least = column[service] + 1;
            raise(&mut topic_col, topic, at_least);
        }
        for (topic, service) in &g.subscribes {
            let at_least = topic_col[topic] + 1;
            raise(&mut column, service, at_least);
        }
        if !changed {
            break;
        }
    }
    let mut nodes: Vec<(String, usize)> = topic_col
        .into_iter()
        .map(|(t, c)| (format!("topic:{t}"), c))
        .collect();
    nodes.extend(column);
    let width = |name: &str| {
        let label = name.strip_prefix("topic:").unwrap_or(name);
        (label.len() as f64 * CHAR_W + 40.0).max(120.0)
    };
    let columns = nodes.iter().map(|(_, c)| *c).max().unwrap_or(0) + 1;
    let col_width: Vec<f64> = (0..columns)
        .map(|c| {
            nodes
                .iter()
                .filter(|(_, col)| *col == c)
                .map(|(n, _)| width(n))
                .fold(0.0, f64::max)
        })
        .collect();
    let mut rects = BTreeMap::new();
    let mut x = MARGIN;
    for (c, w) in col_width.iter().enumerate() {
        let mut y = MARGIN;
        let mut in_col: Vec<&String> = nodes
            .iter()
            .filter(|(_, col)| *col == c)
            .map(|(n, _)| n)
            .collect();
        in_col.sort();
        for name in in_col {
            let nw = width(name);
            rects.insert(
                name.clone(),
                Rect {
                    x: x + (w - nw) / 2.0,
                    y,
                    w: nw,
                    h: BOX_H,
                },
            );
            y += BOX_H + ROW_GAP;
        }
        x += w + COL_GAP;
    }
    rects
}

/// Whether the straight line from `from`'s right side to `to`'s left side would cross
/// another box: such an edge is drawn as an arc over the row instead.
fn blocked(rects: &BTreeMap<String, Rect>, from: &Rect, to: &Rect) -> bool {
    let (x1, x2) = (from.x + from.w, to.x);
    let (ya, yb) = (from.y + from.h / 2.0, to.y + to.h / 2.0);
    rects.values().any(|r| {
        r != from
            && r != to
            && r.x < x2
            && r.x + r.w > x1
            && r.y < ya.max(yb)
            && r.y + r.h > ya.min(yb)
    })
}

/// The diagram as SVG.
pub fn to_svg(g: &Graph) -> String {
    let mut rects = layout(g);
    let edges: Vec<(String, String, bool)> = g
        .calls
        .iter()
        .map(|(a, b)| (a.clone(), b.clone(), false))
        .chain(
            g.publishes
                .iter()
                .map(|(s, t)| (s.clone(), format!("topic:{t}"), true)),
        )
        .chain(
            g.subscribes
                .iter()
                .map(|(t, s)| (format!("topic:{t}"), s.clone(), true)),
        )
        .collect();
    // Room above the boxes for the arcs.
    let arcs = edges
        .iter()
        .filter(|(a, b, _)| {
            rects[b].x > rects[a].x + rects[a].w && blocked(&rects, &rects[a], &rects[b])
        })
        .count();
    let headroom = if arcs > 0 {
        16.0 + 14.0 * arcs as f64
    } else {
        0.0
    };
    for r in rects.values_mut() {
        r.y += headroom;
    }
    let width = rects.values().map(|r| r.x + r.w).fold(0.0, f64::max) + MARGIN;
    let height = rects.values().map(|r| r.y + r.h).fold(0.0, f64::max) + MARGIN;
    let esc = crate::dashboard::html::esc;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"architecture\" viewBox=\"0 0 {width:.0} {height:.0}\" \
         width=\"{width:.0}\" height=\"{height:.0}\" font-family=\"system-ui, sans-serif\" font-size=\"14\">\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" \
         orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#4c5fd5\"/></marker>\
         <marker id=\"arrow-dashed\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" \
         orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#9b6bd6\"/></marker></defs>"
    );
    let mut arc = 0usize;
    for (a, b, dashed) in &edges {
        let (from, to) = (&rects[a], &rects[b]);
        let d = if to.x > from.x + from.w && blocked(&rects, from, to) {
            // Over the top, each arc a little higher than the last.
            arc += 1;
            let top = headroom - 10.0 - 14.0 * (arc - 1) as f64;
            let (x1, x2) = (from.x + from.w * 0.7, to.x + to.w * 0.3);
            format!(
                "M{x1:.1},{:.1} C{x1:.1},{top:.1} {x2:.1},{top:.1} {x2:.1},{:.1}",
                from.y, to.y
            )
        } else if to.x > from.x + from.w {
            let (x1, y1) = (from.x + from.w, from.y + from.h / 2.0);
            let (x2, y2) = (to.x, to.y + to.h / 2.0);
            let mid = (x1 + x2) / 2.0;
            format!("M{x1:.1},{y1:.1} C{mid:.1},{y1:.1} {mid:.1},{y2:.1} {x2:.1},{y2:.1}")
        } else {
            // Same column or leftwards: from below one box to the top of the other.
            let (x1, y1) = (from.x + from.w / 2.0, from.y + from.h);
            let (x2, y2) = (to.x + to.w / 2.0, to.y);
            format!(
                "M{x1:.1},{y1:.1} C{x1:.1},{:.1} {x2:.1},{:.1} {x2:.1},{y2:.1}",
                y1 + 30.0,
                y2 - 30.0
            )
        };
        let (stroke, marker, dash, class) = if *dashed {
            (
                "#9b6bd6",
                "arrow-dashed",
                " stroke-dasharray=\"6 4\"",
                "pubsub",
            )
        } else {
            ("#4c5fd5", "arrow", "", "call")
        };
        let _ = write!(
            out,
            "<path class=\"edge {class}\" d=\"{d}\" fill=\"none\" stroke=\"{stroke}\" \
             stroke-width=\"1.6\"{dash} marker-end=\"url(#{marker})\"/>"
        );
    }
    for (name, r) in &rects {
        if let Some(topic) = name.strip_prefix("topic:") {
            let _ = write!(
                out,
                "<g class=\"topic\" data-name=\"{t}\"><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" \
                 rx=\"28\" fill=\"#f4eefc\" stroke=\"#9b6bd6\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" \
                 fill=\"#1d2330\">{t}</text></g>",
                r.x,
                r.y + 8.0,
                r.w,
                r.h - 16.0,
                r.x + r.w / 2.0,
                r.y + r.h / 2.0 + 5.0,
                t = esc(topic),
            );
        } else {
            let has_db = g.services.get(name).copied().unwrap_or(false);
            let _ = write!(
                out,
                "<g class=\"service\" data-name=\"{s}\"><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" \
                 rx=\"8\" fill=\"#fff\" stroke=\"#1d2330\" stroke-width=\"1.4\"/><text x=\"{:.1}\" y=\"{:.1}\" \
                 text-anchor=\"middle\" font-weight=\"600\" fill=\"#1d2330\">{s}</text>{db}</g>",
                r.x,
                r.y,
                r.w,
                r.h,
                r.x + r.w / 2.0,
                r.y + if has_db { 24.0 } else { r.h / 2.0 + 5.0 },
                s = esc(name),
                db = if has_db {
                    format!(
                        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"12\" fill=\"#6b7385\">\
                         \u{26c1} database</text>",
                        r.x + r.w / 2.0,
                        r.y + 44.0
                    )
                } else {
                    String::new()
                },
            );
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop() -> Graph {
        read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop-app")).unwrap()
    }

    #[test]
    fn the_shop_reads_as_the_guide_draws_it() {
        let g = shop();
        let services: Vec<&str> = g.services.keys().map(String::as_str).collect();
        assert_eq!(
            services,
            [
                "checkout",
                "notifications",
                "orders",
                "payments",
                "products",
                "users"
            ]
        );
        // Every service has a database but checkout, whose progress its workflow keeps.
        let with_db: Vec<&str> = g
            .services
            .iter()
            .filter(|(_, has_db)| **has_db)
            .map(|(s, _)| s.as_str())
            .collect();
        assert_eq!(
            with_db,
            ["notifications", "orders", "payments", "products", "users"]
        );
        let calls: Vec<(&str, &str)> = g
            .calls
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        for call in [
            ("checkout", "orders"),
            ("checkout", "payments"),
            ("checkout", "products"),
            ("checkout", "users"),
            ("orders", "products"),
            ("orders", "users"),
            ("notifications", "users"),
        ] {
            assert!(calls.contains(&call), "{call:?} in {calls:?}");
        }
        assert!(
            !calls.contains(&("notifications", "orders")),
            "test code is left out: {calls:?}"
        );
        assert_eq!(g.topics["order-created"], "orders");
        assert!(
            g.publishes
                .contains(&("orders".into(), "order-created".into()))
        );
        assert!(
            g.subscribes
                .contains(&("order-created".into(), "notifications".into()))
        );
    }

    #[test]
    fn the_layout_has_no_overlaps_and_callers_left_of_callees() {
        let g = shop();
        let rects = layout(&g);
        let all: Vec<(&String, &Rect)> = rects.iter().collect();
        for (i, (a, ra)) in all.iter().enumerate() {
            for (b, rb) in &all[i + 1..] {
                assert!(!ra.overlaps(rb), "{a} overlaps {b}");
            }
        }
        for (from, to) in &g.calls {
            assert!(rects[from].x < rects[to].x, "{from} is left of {to}");
        }
    }

    #[test]
    fn every_format_names_every_node_and_edge() {
        let g = shop();
        let dot = to_dot(&g);
        assert!(dot.contains("\"orders\" -> \"users\";"), "{dot}");
        assert!(
            dot.contains("\"orders\" -> \"topic:order-created\" [style=dashed];"),
            "{dot}"
        );
        let mermaid = to_mermaid(&g);
        assert!(mermaid.contains("orders --> users"), "{mermaid}");
        assert!(
            mermaid.contains("topic_order_created -.-> notifications"),
            "{mermaid}"
        );
        let svg = to_svg(&g);
        for name in [
            "checkout",
            "notifications",
            "orders",
            "products",
            "users",
            "order-created",
        ] {
            assert!(svg.contains(&format!("data-name=\"{name}\"")), "{name}");
        }
        assert_eq!(svg.matches("class=\"edge call\"").count(), g.calls.len());
    }
}
