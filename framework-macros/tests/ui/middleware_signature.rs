use ovation::middleware::{Next, Request, Response};
use ovation::prelude::*;

#[ovation::middleware(target = tags("admin"))]
async fn one_parameter(req: Request) -> Result<Response, Error> {
    let _ = req;
    Err(Error::permission_denied("no"))
}

#[ovation::middleware(target = tags("admin"))]
async fn wrong_return(req: Request, next: Next) -> Result<(), Error> {
    let _ = next.run(req).await?;
    Ok(())
}

#[ovation::middleware(target = everything)]
async fn bad_target(req: Request, next: Next) -> Result<Response, Error> {
    next.run(req).await
}

fn main() {}
