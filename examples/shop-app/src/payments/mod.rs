//! The `payments` service: charges and refunds, each idempotent by the caller's key.
//!
//! Both endpoints are private: only the app's services (the checkout service) may move money.
//! The payment provider reaches the shop through its webhook ([`webhook`]), public and signed.
//!
//! **The decline rule.** Every user has a credit limit of [`CREDIT_LIMIT_CENTS`]
//! (10,000.00): a charge is declined (`failed_precondition`, "payment declined") when it
//! would take the user's outstanding charges — charged and not refunded — above the limit.
//! The rule is deterministic, so a test declines a payment by checking out more than the
//! limit.
//!
//! **Idempotency.** A charge carries an idempotency key. Charging again with the same key
//! returns the first outcome (the same charge, or the same decline) and moves no money; the
//! same key with another user or amount is `invalid_argument`. Refunding a key twice is fine;
//! refunding a key that was never charged spends it, so a charge still in flight with that key
//! is refused instead of taking money nobody will refund.

use ovation::prelude::*;

use crate::check_text;

pub mod webhook;

static DB: Database = ovation::database!("payments", migrations = "./migrations");

/// How much a user may owe at once, in cents: charges above it are declined.
pub const CREDIT_LIMIT_CENTS: i64 = 1_000_000;

#[ovation::model]
#[derive(PartialEq)]
pub struct Charge {
    pub id: Uuid,
    pub idempotency_key: String,
    pub user_id: Uuid,
    pub amount_cents: i64,
    /// `charged` or `refunded`.
    pub status: String,
}

#[ovation::model]
pub struct ChargeParams {
    /// Charging twice with one key charges once.
    pub idempotency_key: String,
    pub user_id: Uuid,
    pub amount_cents: i64,
}

#[ovation::model]
pub struct RefundParams {
    /// The key the charge was made with.
    pub idempotency_key: String,
}

#[ovation::model]
#[derive(PartialEq)]
pub struct Charges {
    pub charges: Vec<Charge>,
}

#[ovation::model]
struct Row {
    id: Uuid,
    idempotency_key: String,
    user_id: Option<Uuid>,
    amount_cents: i64,
    status: String,
}

impl Row {
    /// The outcome this row stands for, for a caller asking to charge `p`.
    fn outcome(self, p: &ChargeParams) -> Result<Charge, Error> {
        if self.status == "void" {
            return Err(Error::failed_precondition(
                "this charge was cancelled before it was made",
            ));
        }
        if self.user_id != Some(p.user_id) || self.amount_cents != p.amount_cents {
            return Err(Error::invalid_argument(
                "this idempotency key was used for another charge",
            ));
        }
        if self.status == "declined" {
            return Err(declined(p.amount_cents));
        }
        Ok(Charge {
            id: self.id,
            idempotency_key: self.idempotency_key,
            user_id: p.user_id,
            amount_cents: self.amount_cents,
            status: self.status,
        })
    }
}

fn declined(amount_cents: i64) -> Error {
    Error::failed_precondition("payment declined: the charge exceeds the user's credit limit")
        .with_details(serde_json::json!({
            "amountCents": amount_cents,
            "creditLimitCents": CREDIT_LIMIT_CENTS,
        }))
}

/// Charges a user, once per idempotency key; declined above the credit limit (see the module
/// docs).
#[api(method = "POST", path = "/payments/charge")]
pub async fn charge(p: ChargeParams) -> Result<Charge, Error> {
    check_text("idempotencyKey", &p.idempotency_key, 200)?;
    if p.amount_cents <= 0 {
        return Err(Error::invalid_argument("`amountCents` must be at least 1"));
    }
    let mut tx = DB.begin().await?;
    // One user's charges are decided one at a time, so two concurrent charges cannot both
    // fit under the limit that only one of them fits under.
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))",
        p.user_id.to_string()
    )
    .execute(&mut *tx)
    .await?;
    let existing = sqlx::query_as!(
Row, "SELECT id, idempotency_key, user_id, amount_cents, status FROM charges WHERE idempotency_key = $1", &p.idempotency_key)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = existing {
        return row.outcome(&p);
    }
    let owed: i64 = sqlx::query_scalar!(
        "SELECT COALESCE(SUM(amount_cents), 0)::BIGINT AS \"owed!\" FROM charges
         WHERE user_id = $1 AND status = 'charged'",
        p.user_id
    )
    .fetch_one(&mut *tx)
    .await?;
    let status = match owed.checked_add(p.amount_cents) {
        Some(total) if total <= CREDIT_LIMIT_CENTS => "charged",
        _ => "declined",
    };
    // A refund of this key may have spent it meanwhile: then that row is the outcome.
    let row = sqlx::query_as!(
        Row,
        "INSERT INTO charges (idempotency_key, user_id, amount_cents, status)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (idempotency_key) DO NOTHING
         RETURNING id, idempotency_key, user_id, amount_cents, status",
        &p.idempotency_key,
        p.user_id,
        p.amount_cents,
        status
    )
    .fetch_optional(&mut *tx)
    .await?;
    let row = match row {
        Some(row) => row,
        None => {
            sqlx::query_as!(
Row, "SELECT id, idempotency_key, user_id, amount_cents, status FROM charges WHERE idempotency_key = $1", &p.idempotency_key)
            .fetch_one(&mut *tx)
            .await?
        }
    };
    tx.commit().await?;
    if status == "declined" {
        ovation::tracing::info!(user = %p.user_id, amount = p.amount_cents, "payment declined");
    }
    row.outcome(&p)
}

/// Refunds the charge made with `idempotencyKey`: the compensation of [`charge`]. Refunding
/// twice, or a key never charged, succeeds and leaves the key spent.
#[api(method = "POST", path = "/payments/refund")]
pub async fn refund(p: RefundParams) -> Result<(), Error> {
    check_text("idempotencyKey", &p.idempotency_key, 200)?;
    sqlx::query!(
        "INSERT INTO charges (idempotency_key, amount_cents, status) VALUES ($1, 0, 'void')
         ON CONFLICT (idempotency_key) DO UPDATE SET status = 'refunded', refunded_at = NOW()
             WHERE charges.status = 'charged'",
        &p.idempotency_key
    )
    .execute(DB.pool())
    .await?;
    Ok(())
}

/// A user's charges, charged or refunded, oldest first.
#[api(method = "GET", path = "/payments/users/:user_id/charges")]
pub async fn charges(user_id: Uuid) -> Result<Charges, Error> {
    let rows = sqlx::query_as!(
        Row,
        "SELECT id, idempotency_key, user_id, amount_cents, status FROM charges
         WHERE user_id = $1 AND status IN ('charged', 'refunded')
         ORDER BY created_at, id",
        user_id
    )
    .fetch_all(DB.pool())
    .await?;
    let charges = rows
        .into_iter()
        .map(|r| Charge {
            id: r.id,
            idempotency_key: r.idempotency_key,
            user_id,
            amount_cents: r.amount_cents,
            status: r.status,
        })
        .collect();
    Ok(Charges { charges })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(key: &str, user_id: Uuid, amount_cents: i64) -> ChargeParams {
        ChargeParams {
            idempotency_key: key.into(),
            user_id,
            amount_cents,
        }
    }

    #[ovation::test]
    async fn charging_twice_with_one_key_charges_once() {
        let user = Uuid::new_v4();
        let first = charge(params("k1", user, 500)).await.unwrap();
        let again = charge(params("k1", user, 500)).await.unwrap();
        assert_eq!(first, again);
        assert_eq!(charges(user).await.unwrap().charges, vec![first]);
        let err = charge(params("k1", user, 600)).await.unwrap_err();
        assert_eq!(err.code(), ErrCode::InvalidArgument);
    }

    #[ovation::test]
    async fn charges_above_the_credit_limit_are_declined_deterministically() {
        let user = Uuid::new_v4();
        charge(params("a", user, CREDIT_LIMIT_CENTS - 100))
            .await
            .unwrap();
        let err = charge(params("b", user, 101)).await.unwrap_err();
        assert_eq!(err.code(), ErrCode::FailedPrecondition);
        assert!(err.message().starts_with("payment declined"), "{err}");
        // The same key gets the same answer, even once the user could afford it.
        refund(RefundParams {
            idempotency_key: "a".into(),
        })
        .await
        .unwrap();
        assert_eq!(
            charge(params("b", user, 101)).await.unwrap_err().code(),
            ErrCode::FailedPrecondition
        );
        charge(params("c", user, 101)).await.unwrap();
        // Another user has a limit of their own.
        charge(params("d", Uuid::new_v4(), CREDIT_LIMIT_CENTS))
            .await
            .unwrap();
    }

    #[ovation::test]
    async fn refunds_are_idempotent_and_spend_the_key() {
        let user = Uuid::new_v4();
        charge(params("paid", user, 700)).await.unwrap();
        for _ in 0..2 {
            refund(RefundParams {
                idempotency_key: "paid".into(),
            })
            .await
            .unwrap();
        }
        let listed = charges(user).await.unwrap().charges;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].status, "refunded");
        // A charge arriving after its refund is refused: no money is taken.
        refund(RefundParams {
            idempotency_key: "late".into(),
        })
        .await
        .unwrap();
        let err = charge(params("late", user, 700)).await.unwrap_err();
        assert_eq!(err.code(), ErrCode::FailedPrecondition);
        assert_eq!(charges(user).await.unwrap().charges.len(), 1);
    }

    #[ovation::test]
    async fn concurrent_charges_never_exceed_the_limit() {
        let user = Uuid::new_v4();
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                ovation::spawn(charge(params(
                    &format!("k{i}"),
                    user,
                    CREDIT_LIMIT_CENTS / 4,
                )))
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(e) => assert_eq!(e.code(), ErrCode::FailedPrecondition, "{e}"),
            }
        }
        assert_eq!(ok, 4);
    }

    #[ovation::test]
    async fn bad_charges_are_invalid_argument() {
        for (key, amount) in [("", 1), ("k", 0), ("k", -5), ("k", i64::MIN)] {
            let err = charge(params(key, Uuid::new_v4(), amount))
                .await
                .unwrap_err();
            assert_eq!(err.code(), ErrCode::InvalidArgument, "{key:?} {amount}");
        }
    }
}
