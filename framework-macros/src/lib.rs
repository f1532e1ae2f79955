//! Procedural macros of [Ovation](https://docs.rs/ovation). Use them through the `ovation`
//! crate (`ovation::api`, `ovation::database!`, `ovation::test`), which holds the logic: these
//! macros parse, validate and expand into calls of `::ovation::__private`.

mod api;
mod attr;
mod auth_handler;
mod database;
mod errors;
mod main_macro;
mod middleware;
mod model;
mod static_files;
mod subscription;
mod test_attr;
mod workflow;

use proc_macro::TokenStream;

/// Turns an async function into an endpoint and a typed call.
///
/// ```ignore
/// #[api(public, method = "GET", path = "/users/:id")]
/// pub async fn get(id: Uuid) -> Result<User, Error> { ... }
/// ```
///
/// Keys: `method` (GET, POST, PUT, PATCH, DELETE, HEAD) and `path` are required; `public`
/// (external clients may call) or `auth` (public, needs the auth handler) set the access, which
/// is private (only the app's services may call) by default. Every `:name` or `*name` segment
/// of the path binds the function parameter of that name; the one remaining parameter, if any,
/// is the request: the JSON body for POST, PUT and PATCH, the query string otherwise.
///
/// ```compile_fail
/// use ovation::prelude::*;
/// #[api(public, method = "GET", path = "/users/:id")]
/// pub async fn get(user_id: Uuid) -> Result<(), Error> { Ok(()) }
/// // error: path parameter `:id` has no function parameter named `id`
/// ```
#[proc_macro_attribute]
pub fn api(attr: TokenStream, item: TokenStream) -> TokenStream {
    api::expand(attr.into(), item.into()).into()
}

/// Makes an async function the app's auth handler: it turns the credential of a request into
/// the app's auth data, or an error.
///
/// ```ignore
/// #[ovation::auth_handler(bearer)]
/// async fn authenticate(token: String) -> Result<Session, Error> { ... }
/// ```
///
/// The attribute says where the credential is: `bearer` (`Authorization: Bearer <token>`),
/// `cookie = "name"`, `header = "name"`; with several, the first present is used. The return
/// type implements `ovation::auth::AuthData`. An app has one auth handler: a second one is a
/// compile error (`only_one_auth_handler_per_app` is defined multiple times).
#[proc_macro_attribute]
pub fn auth_handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    auth_handler::expand(attr.into(), item.into()).into()
}

/// Makes an async function a middleware around endpoint handlers.
///
/// ```ignore
/// #[ovation::middleware(target = tags("admin"))]
/// async fn admins_only(req: middleware::Request, next: middleware::Next)
///     -> Result<middleware::Response, Error> { ... next.run(req).await }
/// ```
///
/// `target = all` wraps every endpoint, `target = tags("a", ...)` the endpoints with one of
/// the tags. See `ovation::middleware`.
#[proc_macro_attribute]
pub fn middleware(attr: TokenStream, item: TokenStream) -> TokenStream {
    middleware::expand(attr.into(), item.into()).into()
}

/// Declares a service database: `static DB: Database = ovation::database!("users", migrations = "./migrations");`
///
/// The migrations folder is relative to the file that declares the database; its files
/// `<n>_<name>.up.sql` are embedded in the binary and applied in order of `n`.
#[proc_macro]
pub fn database(input: TokenStream) -> TokenStream {
    let file = proc_macro::Span::call_site().local_file();
    database::expand(input.into(), file).into()
}

/// Makes an async function the handler of a subscription to a topic.
///
/// ```ignore
/// #[subscription(topic = crate::orders::ORDER_CREATED, name = "send-order-confirmation")]
/// async fn send_confirmation(event: OrderCreated) -> Result<(), Error> { ... }
/// ```
///
/// Options: `max_retries` (default 100), `min_backoff` (default "10s"), `max_backoff` (default
/// "10m"), `ack_deadline` (default "30s"), `max_concurrency` (default 100). The handler runs
/// in the process hosting the service of the module that declares it.
#[proc_macro_attribute]
pub fn subscription(attr: TokenStream, item: TokenStream) -> TokenStream {
    subscription::expand(attr.into(), item.into()).into()
}

/// Runs an async test with fresh, migrated databases of its own and every service local.
///
/// ```ignore
/// #[ovation::test]
/// async fn create_and_get() {
///     let user = users::create(CreateUserParams { .. }).await.unwrap();
///     assert_eq!(users::get(user.id).await.unwrap().email, user.email);
/// }
/// ```
///
/// `#[ovation::test(split)]` runs every service in a runtime of its own, serving over loopback
/// HTTP, and the body's calls go over HTTP too, as between the processes of a deployment.
/// `OVATION_TEST_SPLIT=1` runs every `#[ovation::test]` that way, so a suite can be run both
/// ways.
#[proc_macro_attribute]
pub fn test(attr: TokenStream, item: TokenStream) -> TokenStream {
    test_attr::expand(attr.into(), item.into()).into()
}

/// Makes an async function a durable workflow: its steps (typed service calls, and
/// `ovation::step`s) are checkpointed, and a run cut off by a crash is resumed by another
/// process of its service, replaying the steps done.
///
/// ```ignore
/// #[ovation::workflow]
/// pub async fn checkout(p: CheckoutInput) -> Result<Order, Error> { ... }
///
/// let order = checkout.run(input).await?;
/// ```
///
/// The function takes one input (a serde type) or none, and returns `Result<T, Error>` with a
/// serde `T`; its name becomes an `ovation::workflow::Workflow` value that starts runs. The
/// workflow's name is the function's, or `name = "..."`. See `ovation::workflow`.
#[proc_macro_attribute]
pub fn workflow(attr: TokenStream, item: TokenStream) -> TokenStream {
    workflow::expand(attr.into(), item.into()).into()
}

/// The derives a type that crosses the wire needs, without depending on `serde` or
/// `schemars`: `Debug`, `Clone`, `Serialize`, `Deserialize` and `JsonSchema` (through
/// `::ovation::`), with JSON names in camelCase: fields, and an enum's variants and their
/// fields (unless the type says `#[serde(rename_all = ...)]`).
///
/// ```ignore
/// #[ovation::model(row)]
/// pub struct User {
///     pub id: Uuid,
///     pub display_name: String, // "displayName" in JSON, the column display_name
/// }
/// ```
///
/// Options: `row` also implements `sqlx::FromRow` for Postgres, each field from the column of
/// its name; `without(Debug, Clone)` leaves those out. A derive the type writes itself is not
/// added twice, and `#[serde(...)]`/`#[schemars(...)]` attributes on it and its fields apply.
#[proc_macro_attribute]
pub fn model(attr: TokenStream, item: TokenStream) -> TokenStream {
    model::expand(attr.into(), item.into()).into()
}

/// The `main` of an Ovation app's binary: `ovation::main!();` runs the app
/// ([`ovation::run`](https://docs.rs/ovation)) and links the package's library, where the
/// services usually live, into the binary (without it the linker drops the library's
/// endpoints, and the binary would have none).
#[proc_macro]
pub fn main(input: TokenStream) -> TokenStream {
    main_macro::expand(input.into()).into()
}

/// Serves a folder's files under a path prefix, embedded in the binary at build time:
/// `ovation::static_files!("/assets", dir = "./public")` (the folder relative to the crate's
/// `Cargo.toml`), in the module of the service that serves them. Public, with content types,
/// `ETag`/`Last-Modified` revalidation, and no way out of the folder.
#[proc_macro]
pub fn static_files(input: TokenStream) -> TokenStream {
    static_files::expand(input.into()).into()
}
