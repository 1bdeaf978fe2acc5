//! A flash sale's units in PostgreSQL, the one judge of every sale: taking them (the
//! decisive update that travels with the COMMIT), reading how many are left, and what a
//! process does once it learns that none are (it seals the sale: see `flash.rs`). Used
//! by the one-purchase path (`flash.rs`) and by batches (`flash_batch.rs`).

use std::collections::HashSet;

use crate::db::Tx;
use crate::error::{AppResult, is_check_violation};
use crate::state::AppState;

/// How many units PostgreSQL has left; none seals the sale in this process.
pub(crate) async fn pg_remaining(state: &AppState, id: i64) -> AppResult<i32> {
    let (remaining,): (i32,) = sqlx::query_as("SELECT remaining FROM flash_sales WHERE id = $1").bind(id).fetch_one(&state.primary).await?;
    if remaining == 0 {
        seen_sold_out(state, id);
    }
    Ok(remaining)
}

/// PostgreSQL reported the sale sold out: remember it, and read its final buyers in
/// the background (one read per process and sale) so that later losers are answered
/// from memory.
pub(crate) fn seen_sold_out(state: &AppState, id: i64) {
    state.flash.mark_sold_out(id);
    if !state.flash.start_sealing(id) {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        let buyers = match final_buyers(&state, id).await {
            Ok(buyers) => buyers,
            Err(e) => {
                tracing::warn!(error = %e, sale_id = id, "could not read a sold-out sale's buyers");
                None
            }
        };
        state.flash.finish_sealing(id, buyers);
    });
}

/// Every buyer of the sale, if it is sold out: both read in one statement, so one
/// snapshot, so no purchase can commit between them (a purchase takes a unit).
async fn final_buyers(state: &AppState, id: i64) -> Result<Option<HashSet<i64>>, sqlx::Error> {
    let (remaining, buyers): (i32, Vec<i64>) = sqlx::query_as(
        "SELECT f.remaining, ARRAY(SELECT p.buyer_id FROM flash_purchases p WHERE p.sale_id = f.id)
         FROM flash_sales f WHERE f.id = $1",
    )
    .bind(id)
    .fetch_one(&state.primary)
    .await?;
    Ok((remaining == 0).then(|| buyers.into_iter().collect()))
}

/// Takes `units` of the sale and commits, in one message: `Some(remaining)` once
/// committed (the caller still ends the empty transaction left open with `commit`),
/// `None` when fewer units are left (nothing taken; the caller rolls back).
///
/// The decisive update comes last, and travels with the COMMIT in one message, so
/// the sale's hot row is locked for no round trip at all: every buyer queues on that
/// lock, so the sale sells only as fast as one holder lets go of it. The update is
/// unconditional and `CHECK (remaining >= 0)` refuses an oversell: the error aborts
/// the transaction and PostgreSQL skips the rest of the message. The trailing BEGIN
/// leaves an empty transaction for `commit`, so the driver's bookkeeping holds.
/// The values are integers, formatted here because a message of several statements
/// cannot carry parameters.
pub(crate) async fn take_units(tx: &mut Tx, id: i64, units: i32) -> Result<Option<i32>, sqlx::Error> {
    let decisive = format!(
        "UPDATE flash_sales SET remaining = remaining - {units} WHERE id = {id} RETURNING remaining; \
         COMMIT; BEGIN"
    );
    let steps: Result<Vec<_>, sqlx::Error> = futures::TryStreamExt::try_collect(sqlx::Executor::fetch_many(&mut *tx, sqlx::raw_sql(&decisive))).await;
    match steps {
        Ok(steps) => steps.into_iter().find_map(|step| step.right()).map(|row| sqlx::Row::try_get::<i32, _>(&row, 0)).transpose(),
        Err(e) if is_check_violation(&e) => Ok(None),
        Err(e) => Err(e),
    }
}
