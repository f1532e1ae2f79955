//! The Databases page: each service database's tables with their columns and types, its
//! applied migrations, the first rows of a table (read-only, paged), and an SQL box that runs
//! one read-only query.
//!
//! Only the databases the app declares are reachable, and a table only by a name the
//! database's catalog lists; values never reach SQL text except as the query a developer typed.
//!
//! Rows and queries are read as [`READER`], a role made for it and nothing else, never as the
//! server's superuser: `NOSUPERUSER`, member of no role (so none of `pg_read_server_files`,
//! `pg_write_server_files`, `pg_execute_server_program`, `pg_signal_backend`), `SELECT` on the
//! app's tables and nothing more, `default_transaction_read_only` and a statement timeout of
//! its own, and no right to the advisory-lock functions the app coordinates with. So Postgres
//! itself refuses `COPY ... TO PROGRAM`, reading or writing server files, signalling other
//! backends, locks, reloading the config — whatever reaches the box. Each query also runs in a
//! `READ ONLY` transaction with a `SET LOCAL statement_timeout`, and on a connection of its own.

use std::fmt::Write as _;
use std::time::Duration;

use ovation::sqlx::{self, Connection, PgConnection};
use serde_json::Value;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};

use super::html::{esc, not_running, shell};
use super::{Dashboard, current, declared_databases, not_found};
use crate::guard::form_field;

/// Rows per page of a table.
pub const PAGE: i64 = 50;
/// Rows shown of a query's result.
const QUERY_ROWS: i64 = 200;
/// How long a query may run.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The role rows and queries are read as.
pub const READER: &str = "ovation_dashboard_reader";

/// The functions of `pg_catalog` that every role may call by default and the reader must not:
/// the advisory locks the app coordinates with (Pub/Sub claims, migrations).
const ADVISORY_LOCKS: &[&str] = &[
    "pg_advisory_lock(bigint)",
    "pg_advisory_lock(integer, integer)",
    "pg_advisory_lock_shared(bigint)",
    "pg_advisory_lock_shared(integer, integer)",
    "pg_try_advisory_lock(bigint)",
    "pg_try_advisory_lock(integer, integer)",
    "pg_try_advisory_lock_shared(bigint)",
    "pg_try_advisory_lock_shared(integer, integer)",
    "pg_advisory_xact_lock(bigint)",
    "pg_advisory_xact_lock(integer, integer)",
    "pg_advisory_xact_lock_shared(bigint)",
    "pg_advisory_xact_lock_shared(integer, integer)",
    "pg_try_advisory_xact_lock(bigint)",
    "pg_try_advisory_xact_lock(integer, integer)",
    "pg_try_advisory_xact_lock_shared(bigint)",
    "pg_try_advisory_xact_lock_shared(integer, integer)",
    "pg_advisory_unlock(bigint)",
    "pg_advisory_unlock(integer, integer)",
    "pg_advisory_unlock_shared(bigint)",
    "pg_advisory_unlock_shared(integer, integer)",
    "pg_advisory_unlock_all()",
];

/// The Postgres server of the app's databases, as the dashboard reaches it.
#[derive(Debug, Clone)]
pub struct Databases {
    server: ovation::tooling::PgServer,
    /// [`READER`]'s password: derived from the server's URL, so every `ovation run` (and test)
    /// on the same server sets the same one and none locks another out.
    reader_password: String,
}

impl Databases {
    /// The databases on `server`.
    pub fn new(server: ovation::tooling::PgServer) -> Databases {
        Databases {
            reader_password: server.derive_secret("ovation dashboard reader"),
            server,
        }
    }

    async fn connect(&self, database: &str) -> Result<PgConnection, String> {
        PgConnection::connect_with(&self.server.options(database))
            .await
            .map_err(|e| format!("cannot connect to {database}: {e}"))
    }

    /// A connection to `database` as [`READER`], (re)making the role and its grants first:
    /// tables a migration added since are readable too, and a role someone altered is put
    /// back as it must be.
    async fn connect_reader(&self, database: &str) -> Result<PgConnection, String> {
        let mut admin = self.connect(database).await?;
        let mut failure = None;
        // Two runs setting the role up at once may collide ("tuple concurrently updated").
        for _ in 0..3 {
            match self.set_up_reader(&mut admin, database).await {
                Ok(()) => {
                    failure = None;
                    break;
                }
                Err(e) => failure = Some(e),
            }
        }
        let _ = admin.close().await;
        if let Some(e) = failure {
            return Err(format!(
                "cannot set up the read-only role {READER} in {database} (the dashboard needs \
                 a server role that may create roles): {e}"
            ));
        }
        let options = self
            .server
            .options(database)
            .username(READER)
            .password(&self.reader_password);
        PgConnection::connect_with(&options)
            .await
            .map_err(|e| format!("cannot connect to {database} as {READER}: {e}"))
    }

    async fn set_up_reader(
        &self,
        admin: &mut PgConnection,
        database: &str,
    ) -> Result<(), sqlx::Error> {
        let quoted_db = format!("\"{}\"", database.replace('"', "\"\""));
        // The password is hex: safe in a literal.
        let password = &self.reader_password;
        let attributes = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION \
                          NOBYPASSRLS CONNECTION LIMIT 16";
        let mut statements = vec![
            format!(
                "DO $$ BEGIN CREATE ROLE {READER} {attributes} PASSWORD '{password}'; \
                 EXCEPTION WHEN duplicate_object THEN NULL; END $$"
            ),
            format!("ALTER ROLE {READER} WITH {attributes} PASSWORD '{password}'"),
            format!("ALTER ROLE {READER} SET default_transaction_read_only = on"),
            format!(
                "ALTER ROLE {READER} SET statement_timeout = '{}ms'",
                TIMEOUT.as_millis()
            ),
            format!("ALTER ROLE {READER} SET lock_timeout = '1s'"),
            // No role's rights but its own: not pg_read_server_files, pg_signal_backend, ...
            format!(
                "DO $$ DECLARE r record; BEGIN FOR r IN SELECT roleid::regrole::text AS name \
                 FROM pg_auth_members WHERE member = '{READER}'::regrole LOOP \
                 EXECUTE format('REVOKE %s FROM {READER}', r.name); END LOOP; END $$"
            ),
            format!("REVOKE ALL ON DATABASE {quoted_db} FROM {READER}"),
            format!("GRANT CONNECT ON DATABASE {quoted_db} TO {READER}"),
            format!("GRANT USAGE ON SCHEMA public TO {READER}"),
            format!("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {READER}"),
            // The app's tables, not Ovation's bookkeeping beside them.
            format!(
                "DO $$ DECLARE r record; BEGIN FOR r IN SELECT c.relname FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' \
                 AND c.relkind IN ('r', 'v', 'm', 'p') AND c.relname NOT LIKE '\\_ovation%' LOOP \
                 EXECUTE format('GRANT SELECT ON public.%I TO {READER}', r.relname); END LOOP; END $$"
            ),
        ];
        // Every role may take advisory locks by default; the reader must not hold the app's.
        // Only the functions' owner (a superuser) can take that right from PUBLIC; the role
        // this server is reached as keeps it.
        for function in ADVISORY_LOCKS {
            statements.push(format!(
                "REVOKE EXECUTE ON FUNCTION pg_catalog.{function} FROM PUBLIC"
            ));
            statements.push(format!(
                "GRANT EXECUTE ON FUNCTION pg_catalog.{function} TO CURRENT_USER"
            ));
        }
        let mut tx = admin.begin().await?;
        for statement in statements {
            sqlx::query(&statement).execute(&mut *tx).await?;
        }
        tx.commit().await
    }
}

/// One table of a database: its columns and their types.
#[derive(Debug)]
pub struct Table {
    pub name: String,
    pub columns: Vec<(String, String, bool)>,
}

/// The tables (public schema, Ovation's own bookkeeping excluded) and applied migrations.
pub async fn describe(
    dbs: &Databases,
    database: &str,
) -> Result<(Vec<Table>, Vec<(i64, String, String)>), String> {
    let mut conn = dbs.connect(database).await?;
    let columns: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT c.table_name::text, c.column_name::text, c.data_type::text, c.is_nullable::text
         FROM information_schema.columns c
         JOIN information_schema.tables t
           ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
           AND c.table_name NOT LIKE '\\_ovation%'
         ORDER BY c.table_name, c.ordinal_position",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(|e| e.to_string())?;
    let mut tables: Vec<Table> = Vec::new();
    for (table, column, kind, nullable) in columns {
        if tables.last().is_none_or(|t| t.name != table) {
            tables.push(Table {
                name: table.clone(),
                columns: Vec::new(),
            });
        }
        let last = tables.last_mut().expect("just pushed");
        last.columns.push((column, kind, nullable == "YES"));
    }
    let migrations: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT version, file, to_char(applied_at, 'YYYY-MM-DD HH24:MI:SS') FROM _ovation_migrations ORDER BY version",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap_or_default();
    let _ = conn.close().await;
    Ok((tables, migrations))
}

/// Rows `page * PAGE ..` of `table` as JSON objects, and whether more follow. `table` must be
/// one [`describe`] listed.
pub async fn rows(
    dbs: &Databases,
    database: &str,
    table: &str,
    page: i64,
) -> Result<(Vec<Value>, bool), String> {
    let mut conn = dbs.connect_reader(database).await?;
    let quoted = format!("\"{}\"", table.replace('"', "\"\""));
    let sql = format!(
        "SELECT row_to_json(t)::text FROM {quoted} t LIMIT {} OFFSET {}",
        PAGE + 1,
        page.max(0) * PAGE
    );
    let mut tx = conn.begin().await.map_err(|e| e.to_string())?;
    sqlx::query("SET TRANSACTION READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
    let texts: Vec<String> = sqlx::query_scalar(&sql)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
    let _ = tx.rollback().await;
    let _ = conn.close().await;
    let mut rows: Vec<Value> = texts
        .iter()
        .filter_map(|t| serde_json::from_str(t).ok())
        .collect();
    let more = rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);
    Ok((rows, more))
}

/// Runs one read-only query; its rows as JSON objects (at most 200).
pub async fn query(dbs: &Databases, database: &str, sql: &str) -> Result<Vec<Value>, String> {
    let sql = sql.trim().trim_end_matches(';').trim();
    if sql.is_empty() {
        return Err("the query is empty".into());
    }
    if sql.contains(';') {
        return Err("one statement at a time".into());
    }
    let mut conn = dbs.connect_reader(database).await?;
    let mut tx = conn.begin().await.map_err(|e| e.to_string())?;
    sqlx::query("SET TRANSACTION READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query(&format!(
        "SET LOCAL statement_timeout = {}",
        TIMEOUT.as_millis()
    ))
    .execute(&mut *tx)
    .await
    .map_err(|e| e.to_string())?;
    // A query's rows come back as JSON, one object per row; any other statement runs as is,
    // so Postgres itself says why it cannot (a write in a read-only transaction).
    let first = sql
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    let result: Result<Vec<String>, sqlx::Error> =
        if matches!(first.as_str(), "SELECT" | "WITH" | "VALUES" | "TABLE") {
            let wrapped = format!("SELECT row_to_json(q)::text FROM ({sql}) q LIMIT {QUERY_ROWS}");
            sqlx::query_scalar(&wrapped).fetch_all(&mut *tx).await
        } else {
            sqlx::query(sql).execute(&mut *tx).await.map(|_| Vec::new())
        };
    let _ = tx.rollback().await;
    let _ = conn.close().await;
    match result {
        Ok(texts) => Ok(texts
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect()),
        Err(sqlx::Error::Database(e)) => Err(e.message().to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// Rows (JSON objects) as an HTML table, columns in the first row's order.
pub fn rows_table(rows: &[Value]) -> String {
    let Some(first) = rows.first().and_then(Value::as_object) else {
        return "<p class=\"muted\">No rows.</p>".into();
    };
    let columns: Vec<&String> = first.keys().collect();
    let mut out = String::from("<div class=\"scroll\"><table class=\"traces rows\"><thead><tr>");
    for c in &columns {
        let _ = write!(out, "<th>{}</th>", esc(c));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for c in &columns {
            let v = &row[c.as_str()];
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Null => "null".into(),
                other => other.to_string(),
            };
            let _ = write!(out, "<td><code>{}</code></td>", esc(&text));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    out
}

fn sql_box(db: &str, sql: &str, token: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/databases/{db}/query\" class=\"sql\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
         <textarea name=\"sql\" rows=\"3\" spellcheck=\"false\" placeholder=\"SELECT * FROM ...\">{}</textarea>\
         <button type=\"submit\">Run read-only</button></form>",
        esc(sql),
        db = esc(db),
        token = esc(token),
    )
}

pub(super) async fn page(State(d): State<Dashboard>) -> Response {
    let status = current(&d.status);
    let Some(declared) = declared_databases(&d, &status.url).await else {
        return not_running(&d, &status, "Databases", "databases");
    };
    let mut body = String::from("<h1>Databases</h1><div class=\"cards\">");
    for (name, service) in declared {
        let _ = write!(
            body,
            "<section class=\"card\" id=\"database-{n}\"><h2>{n}</h2><p class=\"muted\">service {s}</p>",
            n = esc(&name),
            s = esc(&service)
        );
        match describe(&d.databases, &name).await {
            Ok((tables, migrations)) => {
                body.push_str("<h3>Tables</h3><ul class=\"plain tables\">");
                for t in &tables {
                    let columns: Vec<String> = t
                        .columns
                        .iter()
                        .map(|(c, kind, nullable)| {
                            format!(
                                "<code>{}</code> <span class=\"type\">{}{}</span>",
                                esc(c),
                                esc(kind),
                                if *nullable { "?" } else { "" }
                            )
                        })
                        .collect();
                    let _ = write!(
                        body,
                        "<li><a href=\"/databases/{n}/tables/{t}\">{t}</a><div class=\"columns\">{}</div></li>",
                        columns.join(" · "),
                        n = esc(&name),
                        t = esc(&t.name)
                    );
                }
                body.push_str("</ul><h3>Migrations</h3><ul class=\"plain\">");
                for (version, file, at) in &migrations {
                    let _ = write!(
                        body,
                        "<li><code>{version}</code> {} <span class=\"muted\">{}</span></li>",
                        esc(file),
                        esc(at)
                    );
                }
                body.push_str("</ul>");
                body.push_str(&sql_box(&name, "", d.guard.token()));
            }
            Err(e) => {
                let _ = write!(body, "<p class=\"notice\">{}</p>", esc(&e));
            }
        }
        body.push_str("</section>");
    }
    body.push_str("</div>");
    shell(&d, "Databases", "databases", &status, &body).into_response()
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct PageQuery {
    page: Option<i64>,
}

pub(super) async fn table(
    State(d): State<Dashboard>,
    Path((db, table)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> Response {
    let status = current(&d.status);
    let Some(declared) = declared_databases(&d, &status.url).await else {
        return not_running(&d, &status, "Databases", "databases");
    };
    let known_table = declared.iter().any(|(n, _)| *n == db)
        && describe(&d.databases, &db)
            .await
            .ok()
            .is_some_and(|(tables, _)| tables.iter().any(|t| t.name == table));
    if !known_table {
        let uri = format!("/databases/{db}/tables/{table}")
            .parse()
            .unwrap_or_default();
        return not_found(State(d), uri).await;
    }
    let page_no = q.page.unwrap_or(0).max(0);
    let body = match rows(&d.databases, &db, &table, page_no).await {
        Ok((rows, more)) => {
            let mut nav = String::from("<p class=\"pager\">");
            if page_no > 0 {
                let _ = write!(nav, "<a href=\"?page={}\">← previous</a> ", page_no - 1);
            }
            let _ = write!(
                nav,
                "<span class=\"muted\">rows {}–{}</span>",
                page_no * PAGE + 1,
                page_no * PAGE + rows.len() as i64
            );
            if more {
                let _ = write!(
                    nav,
                    " <a href=\"?page={}\" class=\"next\">next →</a>",
                    page_no + 1
                );
            }
            nav.push_str("</p>");
            format!(
                "<h1><a href=\"/databases\">{db}</a> · {table}</h1>{nav}{}",
                rows_table(&rows),
                db = esc(&db),
                table = esc(&table)
            )
        }
        Err(e) => format!(
            "<h1>{}</h1><p class=\"notice\">{}</p>",
            esc(&table),
            esc(&e)
        ),
    };
    shell(&d, &table, "databases", &status, &body).into_response()
}

pub(super) async fn query_page(
    State(d): State<Dashboard>,
    Path(db): Path<String>,
    form: axum::body::Bytes,
) -> Response {
    let status = current(&d.status);
    let Some(declared) = declared_databases(&d, &status.url).await else {
        return not_running(&d, &status, "Databases", "databases");
    };
    if !declared.iter().any(|(n, _)| *n == db) {
        let uri = format!("/databases/{db}/query").parse().unwrap_or_default();
        return not_found(State(d), uri).await;
    }
    let sql = form_field(&form, "sql").unwrap_or_default();
    let result = match query(&d.databases, &db, &sql).await {
        Ok(rows) => format!(
            "<p class=\"muted\" id=\"query-count\">{} row{}</p>{}",
            rows.len(),
            if rows.len() == 1 { "" } else { "s" },
            rows_table(&rows)
        ),
        Err(e) => format!("<p class=\"notice\" id=\"query-error\">{}</p>", esc(&e)),
    };
    let body = format!(
        "<h1><a href=\"/databases\">{}</a> · query</h1>{}{}",
        esc(&db),
        sql_box(&db, &sql, d.guard.token()),
        result
    );
    shell(&d, "Query", "databases", &status, &body).into_response()
}
