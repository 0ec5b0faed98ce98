//! `p2pctl report`: the compliance report (rendering in [`crate::render::report`]).

use crate::render::report::render_report;
use crate::{Failure, fail, parse_since};
use api::cli::ExitCode;
use api::client::Client;

pub(crate) async fn report(client: &Client, since: &str, format: &str) -> Result<(), Failure> {
    use store::fleet::ComplianceRow;
    if !matches!(format, "md" | "csv" | "json") {
        return Err(fail(
            ExitCode::Usage,
            format!("--format {format}: use md, csv or json"),
        ));
    }
    let since_s = parse_since(since)?.div_euclid(1000);
    let none: Option<&()> = None;
    let rows: Vec<ComplianceRow> = client
        .call("GET", &format!("/v1/report?since_unix_s={since_s}"), none)
        .await?;
    crate::out!("{}", render_report(&rows, format));
    Ok(())
}
