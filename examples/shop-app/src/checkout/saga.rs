//! The checkout saga: reserve the stock → charge the payment → place the order.
//!
//! Every step is idempotent by the checkout's id (the reservation id, the charge's idempotency
//! key, the order's checkout id), and so is every compensation (`release_inventory`, `refund`,
//! `cancel_checkout`), which also spends the id: a step still in flight when its compensation
//! runs is refused rather than done. So any step may be retried, by anyone, at any time.
//!
//! The saga's progress is a row in the checkout service's own database, moved forward before and after
//! each step under a lease. The request drives the saga while it holds the lease; when a step
//! fails, the request undoes every earlier step (and the failed one, whose outcome may be
//! unknown) and answers with the step's error. A saga whose lease ran out — its process
//! crashed, or a compensation failed — is picked up by [`resume_checkouts`], which runs in the
//! process hosting the checkout service from start-up on:
//! - `started` / `reserved` (payment not known to be taken): compensated, then `failed`;
//! - `charged` (stock and money taken): the order is placed, then `completed` — or, if placing
//!   it fails for good, compensated;
//! - `compensating`: compensation retried until it succeeds.

use std::time::Duration;

use ovation::prelude::*;

use crate::{orders, payments, products};

static DB: Database = ovation::database!("checkout", migrations = "./migrations");

/// How long the driver of a saga owns it between two steps before recovery may take over.
const LEASE: Duration = Duration::from_secs(10);
/// How often recovery looks for sagas whose lease ran out.
const RECOVERY_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Checkout {
    pub(crate) id: Uuid,
    pub(crate) user_id: Uuid,
    pub(crate) product_id: Uuid,
    pub(crate) quantity: i32,
    pub(crate) total_cents: i64,
    pub(crate) state: String,
    pub(crate) failed_in: Option<String>,
    pub(crate) order_id: Option<Uuid>,
}

const COLUMNS: &str = "id, user_id, product_id, quantity, total_cents, state, failed_in, order_id";

/// Records a new saga, owned by the caller for one lease.
pub(crate) async fn begin(
    user_id: Uuid,
    product_id: Uuid,
    quantity: i32,
    total_cents: i64,
) -> Result<Checkout, Error> {
    Ok(sqlx::query_as::<_, Checkout>(&format!(
        "INSERT INTO checkouts (id, user_id, product_id, quantity, total_cents, state, lease_until)
         VALUES ($1, $2, $3, $4, $5, 'started', NOW() + make_interval(secs => $6))
         RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(user_id)
    .bind(product_id)
    .bind(quantity)
    .bind(total_cents)
    .bind(LEASE.as_secs_f64())
    .fetch_one(DB.pool())
    .await?)
}

/// Runs the saga to its end: the placed order, or the failed step's error once every earlier
/// step is undone (if undoing fails too, recovery finishes it later).
pub(crate) async fn run(mut c: Checkout) -> Result<orders::Order, Error> {
    match forward(&mut c).await {
        Ok(order) => Ok(order),
        Err(e) => {
            if let Err(ce) = compensate(&c).await {
                ovation::tracing::warn!(
                    checkout = %c.id,
                    "compensation failed, recovery will retry it: {ce}"
                );
            }
            Err(e)
        }
    }
}

/// The steps not done yet, each recorded once done. On failure, `c` is `compensating`.
async fn forward(c: &mut Checkout) -> Result<orders::Order, Error> {
    if c.state == "started" {
        fail_on_error(c, reserve(c).await).await?;
        advance(c, "reserved").await?;
    }
    if c.state == "reserved" {
        fail_on_error(c, charge(c).await).await?;
        advance(c, "charged").await?;
    }
    let order = fail_on_error(c, place(c).await).await?;
    complete(c, order.id).await?;
    Ok(order)
}

async fn complete(c: &mut Checkout, order_id: Uuid) -> Result<(), Error> {
    let done = sqlx::query(
        "UPDATE checkouts SET state = 'completed', order_id = $2, updated_at = NOW()
         WHERE id = $1 AND state = 'charged'",
    )
    .bind(c.id)
    .bind(order_id)
    .execute(DB.pool())
    .await?;
    if done.rows_affected() == 0 {
        return Err(taken_over());
    }
    c.state = "completed".into();
    c.order_id = Some(order_id);
    Ok(())
}

async fn reserve(c: &Checkout) -> Result<(), Error> {
    products::reserve_inventory(
        c.product_id,
        products::ReserveParams {
            quantity: c.quantity,
            reservation_id: Some(c.id),
        },
    )
    .await
}

async fn charge(c: &Checkout) -> Result<payments::Charge, Error> {
    payments::charge(payments::ChargeParams {
        idempotency_key: c.id.to_string(),
        user_id: c.user_id,
        amount_cents: c.total_cents,
    })
    .await
}

fn order_params(c: &Checkout) -> orders::PlaceOrderParams {
    orders::PlaceOrderParams {
        user_id: c.user_id,
        product_id: c.product_id,
        quantity: c.quantity,
        total_cents: c.total_cents,
    }
}

async fn place(c: &Checkout) -> Result<orders::Order, Error> {
    orders::place(c.id, order_params(c)).await
}

/// Records that the saga owner finished a step, renewing the lease.
async fn advance(c: &mut Checkout, to: &str) -> Result<(), Error> {
    let moved = sqlx::query(
        "UPDATE checkouts SET state = $3, updated_at = NOW(),
             lease_until = NOW() + make_interval(secs => $4)
         WHERE id = $1 AND state = $2",
    )
    .bind(c.id)
    .bind(&c.state)
    .bind(to)
    .bind(LEASE.as_secs_f64())
    .execute(DB.pool())
    .await?;
    if moved.rows_affected() == 0 {
        return Err(taken_over());
    }
    c.state = to.into();
    Ok(())
}

fn taken_over() -> Error {
    Error::aborted("the checkout took too long and was taken over by recovery: retry it")
}

/// On a step's error, marks the saga `compensating` (remembering where it failed).
async fn fail_on_error<T>(c: &mut Checkout, result: Result<T, Error>) -> Result<T, Error> {
    let err = match result {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    mark_compensating(c, &err.to_string()).await?;
    Err(err)
}

async fn mark_compensating(c: &mut Checkout, why: &str) -> Result<(), Error> {
    let moved = sqlx::query(
        "UPDATE checkouts SET state = 'compensating', failed_in = state, error = $3,
             updated_at = NOW()
         WHERE id = $1 AND state = $2",
    )
    .bind(c.id)
    .bind(&c.state)
    .bind(why)
    .execute(DB.pool())
    .await?;
    if moved.rows_affected() == 0 {
        return Err(taken_over());
    }
    c.failed_in = Some(std::mem::replace(&mut c.state, "compensating".into()));
    Ok(())
}

/// Undoes, newest first, every step the saga may have done, then records it `failed`.
async fn compensate(c: &Checkout) -> Result<(), Error> {
    if c.state != "compensating" {
        return Ok(());
    }
    let reached = c.failed_in.as_deref().unwrap_or("charged");
    if reached == "charged" {
        orders::cancel_checkout(c.id, order_params(c)).await?;
    }
    if reached == "charged" || reached == "reserved" {
        payments::refund(payments::RefundParams {
            idempotency_key: c.id.to_string(),
        })
        .await?;
    }
    products::release_inventory(
        c.product_id,
        products::ReleaseParams {
            quantity: c.quantity,
            reservation_id: Some(c.id),
        },
    )
    .await?;
    sqlx::query(
        "UPDATE checkouts SET state = 'failed', updated_at = NOW()
         WHERE id = $1 AND state = 'compensating'",
    )
    .bind(c.id)
    .execute(DB.pool())
    .await?;
    Ok(())
}

/// Whether an error says the step may succeed if retried (the callee was down, slow or
/// broken), rather than that it never will.
fn is_transient(e: &Error) -> bool {
    matches!(
        e.code(),
        ErrCode::Unavailable
            | ErrCode::DeadlineExceeded
            | ErrCode::Internal
            | ErrCode::Unknown
            | ErrCode::Aborted
            | ErrCode::Canceled
            | ErrCode::ResourceExhausted
    )
}

/// Takes over the sagas whose lease ran out and drives each to an end; returns how many it
/// took. A saga that cannot end yet (a callee is down) is left for a later round.
pub(crate) async fn recover_due() -> Result<usize, Error> {
    let due = sqlx::query_as::<_, Checkout>(&format!(
        "UPDATE checkouts SET lease_until = NOW() + make_interval(secs => $1),
             attempts = attempts + 1
         WHERE id IN (
             SELECT id FROM checkouts
             WHERE state NOT IN ('completed', 'failed') AND lease_until < NOW()
             ORDER BY lease_until LIMIT 50
             FOR UPDATE SKIP LOCKED)
         RETURNING {COLUMNS}"
    ))
    .bind(LEASE.as_secs_f64())
    .fetch_all(DB.pool())
    .await?;
    let n = due.len();
    for mut c in due {
        let id = c.id;
        if let Err(e) = recover(&mut c).await {
            ovation::tracing::warn!(checkout = %id, "recovery will retry: {e}");
        }
    }
    Ok(n)
}

async fn recover(c: &mut Checkout) -> Result<(), Error> {
    ovation::tracing::info!(checkout = %c.id, state = %c.state, "recovering checkout");
    match c.state.as_str() {
        // The payment may or may not have been taken: undo whatever was done.
        "started" | "reserved" => {
            mark_compensating(c, "interrupted before the payment was confirmed").await?;
            compensate(c).await
        }
        // Stock and money are taken: finish the order, unless it can never be placed.
        "charged" => match place(c).await {
            Ok(order) => complete(c, order.id).await,
            Err(e) if is_transient(&e) => Err(e),
            Err(e) => {
                mark_compensating(c, &e.to_string()).await?;
                compensate(c).await
            }
        },
        _ => compensate(c).await,
    }
}

/// Recovery, from start-up to shutdown, in the process hosting the checkout service.
async fn resume_checkouts() {
    loop {
        if let Err(e) = recover_due().await {
            ovation::tracing::warn!("checkout recovery: {e}");
        }
        tokio::time::sleep(RECOVERY_INTERVAL).await;
    }
}

ovation::on_start!(resume_checkouts);

/// A checkout's row, for tests.
#[cfg(test)]
pub(crate) async fn state_of(id: Uuid) -> (String, Option<Uuid>) {
    sqlx::query_as("SELECT state, order_id FROM checkouts WHERE id = $1")
        .bind(id)
        .fetch_one(DB.pool())
        .await
        .expect("the checkout exists")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    /// A saga as a crash leaves it: steps up to `state` done, the lease run out.
    async fn interrupted(state: &str, failed_in: Option<&str>) -> (Checkout, Uuid, Uuid) {
        let user = fixtures::user("i@example.com", "I").await;
        let product = fixtures::product("Thing", 300, 10).await;
        let mut c = begin(user.id, product.id, 2, 600).await.unwrap();
        reserve(&c).await.unwrap();
        if state != "started" {
            charge(&c).await.unwrap();
        }
        sqlx::query(
            "UPDATE checkouts SET state = $2, failed_in = $3, lease_until = NOW() - INTERVAL '1s'
             WHERE id = $1",
        )
        .bind(c.id)
        .bind(state)
        .bind(failed_in)
        .execute(DB.pool())
        .await
        .unwrap();
        c.state = state.into();
        (c, user.id, product.id)
    }

    async fn stock(product: Uuid) -> i32 {
        products::get(product).await.unwrap().inventory
    }

    async fn charge_statuses(user: Uuid) -> Vec<String> {
        payments::charges(user)
            .await
            .unwrap()
            .charges
            .into_iter()
            .map(|c| c.status)
            .collect()
    }

    #[ovation::test]
    async fn recovery_places_the_order_of_a_charged_saga() {
        let (c, user, product) = interrupted("charged", None).await;
        assert_eq!(recover_due().await.unwrap(), 1);
        let (state, order) = state_of(c.id).await;
        assert_eq!(state, "completed");
        let order = orders::get(order.unwrap()).await.unwrap();
        assert_eq!((order.quantity, order.status.as_str()), (2, "confirmed"));
        assert_eq!(stock(product).await, 8);
        assert_eq!(charge_statuses(user).await, ["charged"]);
        // Done: nothing left to recover.
        assert_eq!(recover_due().await.unwrap(), 0);
    }

    #[ovation::test]
    async fn recovery_undoes_a_saga_interrupted_before_the_payment_was_recorded() {
        // Charged, but the crash came before `reserved → charged` was written.
        let (c, user, product) = interrupted("reserved", None).await;
        assert_eq!(recover_due().await.unwrap(), 1);
        assert_eq!(state_of(c.id).await, ("failed".to_owned(), None));
        assert_eq!(stock(product).await, 10);
        assert_eq!(charge_statuses(user).await, ["refunded"]);
    }

    #[ovation::test]
    async fn a_compensation_left_half_done_is_finished() {
        let (c, user, product) = interrupted("compensating", Some("charged")).await;
        // The first compensation (cancelling the order) had run before the crash.
        orders::cancel_checkout(c.id, order_params(&c))
            .await
            .unwrap();
        assert_eq!(recover_due().await.unwrap(), 1);
        assert_eq!(state_of(c.id).await.0, "failed");
        assert_eq!(stock(product).await, 10);
        assert_eq!(charge_statuses(user).await, ["refunded"]);
        assert_eq!(
            orders::get_by_checkout(c.id).await.unwrap().status,
            "cancelled"
        );
    }

    #[ovation::test]
    async fn a_saga_still_under_its_lease_is_left_to_its_owner() {
        let user = fixtures::user("o@example.com", "O").await;
        let product = fixtures::product("Owned", 300, 10).await;
        let c = begin(user.id, product.id, 1, 300).await.unwrap();
        assert_eq!(recover_due().await.unwrap(), 0);
        assert_eq!(state_of(c.id).await.0, "started");
    }
}
