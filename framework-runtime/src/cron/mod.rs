//! Cron jobs: an async function of a service, run on a schedule, exactly once per tick across
//! every process hosting the service.
//!
//! ```ignore
//! async fn expire_reservations() -> Result<(), Error> { .. }
//! ovation::cron!("expire-reservations", every = "1m", run = expire_reservations);
//! ovation::cron!("nightly-report", schedule = "0 3 * * *", run = nightly_report);
//! ovation::cron!("opening", schedule = "0 9 * * MON-FRI", tz = "Europe/Paris", run = opening);
//! ```
//!
//! **Once per tick.** Every process hosting the job's service wakes at each tick and tries to
//! claim it in Postgres (the framework's `ovation_cron` database, on the server the service
//! databases live on): one row per (job, tick), so one process wins, whatever the number of
//! replicas. No extra server, and the same locally (`ovation run`, `ovation deploy --target
//! local`) as in Kubernetes, where scheduling stays in the app rather than in a `CronJob`: a
//! CronJob starts a pod per tick (seconds of start-up, no warm pools, a second deployment
//! model for the same code), and could not run a job locally at all.
//!
//! **Missed ticks** (nothing ran the service): when it comes back, the latest missed tick is run
//! once, not once per missed tick. A job that never ran waits for its first tick.
//!
//! **Overlap**: a tick that comes while the job still runs (anywhere) is not started; the job
//! never runs twice at once. A run's process heartbeats every 2 s; a run whose process died
//! (no heartbeat for 10 s) is marked failed, so it does not block the job for ever.
//!
//! **Visibility**: each run is a trace root (`cron <job>`); a failure is logged with the job's
//! name and kept with its run (status, error, duration, trace id), which the dashboard's Cron
//! page and `/__ovation/cron` show. "Run now" (and [`run_now`] in tests) runs a job at once,
//! under the same no-overlap rule.
//!
//! In tests jobs do not run on their schedule unless the test asks
//! ([`crate::testing::Hosting::cron_jobs`]); [`run_now`] runs one.

use std::future::Future;
use std::pin::Pin;

use crate::error::Error;

mod schedule;
pub(crate) mod store;

pub use schedule::{CronFields, Schedule};

/// A run of a job, as [`crate::cron!`] makes it.
#[doc(hidden)]
pub type JobFuture = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

/// What [`crate::cron!`] registers.
#[doc(hidden)]
pub struct CronJobDef {
    pub name: &'static str,
    /// `module_path!()` of the declaration: its service is the first module.
    pub module: &'static str,
    pub schedule: Schedule,
    /// The schedule as written (`every 1m`, `0 3 * * *`, `0 3 * * * (Europe/Paris)`).
    pub schedule_text: &'static str,
    /// The IANA time zone a cron expression is read in (`None`: UTC).
    pub tz: Option<&'static str>,
    pub run: fn() -> JobFuture,
    pub file: &'static str,
    pub line: u32,
}

impl std::fmt::Debug for CronJobDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CronJobDef")
            .field("name", &self.name)
            .field("module", &self.module)
            .field("schedule", &self.schedule_text)
            .finish_non_exhaustive()
    }
}

impl CronJobDef {
    /// The service that runs the job.
    pub fn service(&self) -> &'static str {
        crate::runtime::service_of(self.module)
    }

    /// The time zone its schedule is read in (UTC when none is given; a name that is not a
    /// zone stops start-up, see [`check_setup`]).
    pub fn zone(&self) -> chrono_tz::Tz {
        self.tz
            .and_then(|tz| tz.parse().ok())
            .unwrap_or(chrono_tz::Tz::UTC)
    }

    /// The first tick after `t`.
    pub fn next_after(&self, t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        self.schedule.next_after_in(t, self.zone())
    }

    /// The latest tick at or before `t`.
    pub fn latest_at_or_before(
        &self,
        t: chrono::DateTime<chrono::Utc>,
    ) -> chrono::DateTime<chrono::Utc> {
        self.schedule.latest_at_or_before_in(t, self.zone())
    }
}

#[doc(hidden)]
#[derive(Debug)]
pub struct CronJobEntry(pub &'static CronJobDef);

inventory::collect!(CronJobEntry);

/// Declares a cron job: a name (letters, digits, `-`, `_`), a schedule, and the service's async
/// function it runs (`async fn() -> Result<(), ovation::Error>`; a private endpoint without
/// parameters is one):
///
/// ```ignore
/// ovation::cron!("expire-reservations", every = "1m", run = expire_reservations);
/// ovation::cron!("nightly-report", schedule = "0 3 * * MON-FRI", run = report);
/// ```
///
/// `every` takes a period that divides a day (`"30s"`, `"5m"`, `"1h"`); `schedule` a cron
/// expression, in UTC or in the IANA time zone `tz` names:
///
/// ```ignore
/// ovation::cron!("opening-report", schedule = "0 9 * * MON-FRI", tz = "Europe/Paris", run = report);
/// ```
///
/// A schedule that is not valid fails the build; a `tz` that is not a zone stops start-up (and
/// every test) naming the job. See [`crate::cron`].
#[macro_export]
macro_rules! cron {
    ($name:literal, every = $every:literal, run = $run:path $(,)?) => {
        $crate::cron!(@job $name, $crate::cron::Schedule::every($every),
            ::core::concat!("every ", $every), None, $run);
    };
    ($name:literal, schedule = $expr:literal, run = $run:path $(,)?) => {
        $crate::cron!(@job $name, $crate::cron::Schedule::cron($expr), $expr, None, $run);
    };
    ($name:literal, schedule = $expr:literal, tz = $tz:literal, run = $run:path $(,)?) => {
        $crate::cron!(@job $name, $crate::cron::Schedule::cron($expr),
            ::core::concat!($expr, " (", $tz, ")"), Some($tz), $run);
    };
    (@job $name:literal, $schedule:expr, $text:expr, $tz:expr, $run:path) => {
        const _: () = {
            fn __ovation_cron_run() -> $crate::cron::JobFuture {
                $crate::__private::Box::pin($run())
            }
            static __OVATION_CRON_JOB: $crate::cron::CronJobDef = $crate::cron::CronJobDef {
                name: $name,
                module: ::core::module_path!(),
                // Evaluated by the compiler: a schedule that is not valid fails the build.
                schedule: {
                    const SCHEDULE: $crate::cron::Schedule = $schedule;
                    SCHEDULE
                },
                schedule_text: $text,
                tz: $tz,
                run: __ovation_cron_run,
                file: ::core::file!(),
                line: ::core::line!(),
            };
            $crate::__private::inventory::submit! {
                $crate::cron::CronJobEntry(&__OVATION_CRON_JOB)
            }
        };
    };
}

/// Every cron job the app declares, by name.
pub fn jobs() -> Vec<&'static CronJobDef> {
    let mut all: Vec<&'static CronJobDef> = inventory::iter::<CronJobEntry>
        .into_iter()
        .map(|e| e.0)
        .collect();
    all.sort_by_key(|j| j.name);
    all
}

/// The job named `name`.
pub fn job(name: &str) -> Option<&'static CronJobDef> {
    inventory::iter::<CronJobEntry>
        .into_iter()
        .map(|e| e.0)
        .find(|j| j.name == name)
}

/// Whether the app declares a cron job: then processes hosting a service need its database.
pub(crate) fn in_use() -> bool {
    inventory::iter::<CronJobEntry>.into_iter().next().is_some()
}

/// The declarations' mistakes, found before the app serves: a name that is not letters,
/// digits, `-` and `_`, or one used twice.
pub(crate) fn check_setup() -> Result<(), String> {
    let all = jobs();
    for job in &all {
        if job.name.is_empty()
            || !job
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "cron job {:?} ({}:{}): a name is letters, digits, `-` and `_`",
                job.name, job.file, job.line
            ));
        }
    }
    for job in &all {
        if let Some(tz) = job.tz {
            check_zone(tz)
                .map_err(|e| format!("cron job `{}` ({}:{}): {e}", job.name, job.file, job.line))?;
        }
    }
    if let Some(pair) = all.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(format!(
            "cron job `{}` is declared twice, at {}:{} and at {}:{}; give each its own name",
            pair[0].name, pair[0].file, pair[0].line, pair[1].file, pair[1].line
        ));
    }
    Ok(())
}

/// Whether `tz` is an IANA time zone name.
fn check_zone(tz: &str) -> Result<(), String> {
    tz.parse::<chrono_tz::Tz>().map(drop).map_err(|_| {
        let hint = chrono_tz::TZ_VARIANTS
            .iter()
            .find(|z| z.name().eq_ignore_ascii_case(tz))
            .map(|z| format!(" (did you mean `{}`?)", z.name()))
            .unwrap_or_default();
        format!(
            "tz = {tz:?} is not a time zone{hint}; use an IANA name like \"Europe/Paris\" or \
             \"America/New_York\""
        )
    })
}

/// Runs the job `name` now, in the runtime the caller runs in, and returns its outcome: what a
/// test does to run a job, and what the dashboard's "Run now" does. Recorded as a manual run;
/// `aborted` if the job is running already (anywhere), `not_found` if there is no such job.
pub async fn run_now(name: &str) -> Result<(), Error> {
    let job = job(name).ok_or_else(|| Error::not_found(format!("no cron job `{name}`")))?;
    let rt = crate::runtime::current()?;
    store::run_manually(rt, job).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_zone_that_does_not_exist_is_refused_with_a_hint() {
        assert!(check_zone("Europe/Paris").is_ok());
        assert!(check_zone("UTC").is_ok());
        let err = check_zone("europe/paris").unwrap_err();
        assert!(err.contains("did you mean `Europe/Paris`"), "{err}");
        let err = check_zone("Mars/Olympus").unwrap_err();
        assert!(err.contains("IANA name"), "{err}");
    }
}
