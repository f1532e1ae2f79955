use ovation::prelude::*;

async fn sweep() -> Result<(), Error> {
    Ok(())
}

// Does not divide a day: runs would fall at different times each day.
ovation::cron!("sweep", every = "7m", run = sweep);

// An hour past 23.
ovation::cron!("report", schedule = "0 24 * * *", run = sweep);

fn main() {}
