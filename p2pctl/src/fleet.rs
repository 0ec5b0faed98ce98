//! `p2pctl fleet`: a release across the fleet (rendering in [`crate::render::fleet`]).

use crate::render::fleet::fleet_text;
use crate::{Failure, fail, print_json};
use api::cli::ExitCode;
use api::client::Client;

/// How often `fleet --watch` redraws.
pub(crate) const FLEET_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

pub(crate) async fn fleet(
    client: &Client,
    release: &str,
    watch: bool,
    sites: usize,
    site: Option<&str>,
    json: bool,
) -> Result<(), Failure> {
    use store::fleet::FleetReport;
    let none: Option<&()> = None;
    let path = match site {
        Some(s) => format!("/v1/fleet/{release}?site={s}"),
        None => format!("/v1/fleet/{release}"),
    };
    loop {
        let r: FleetReport = client.call("GET", &path, none).await?;
        if json {
            print_json(&r);
        } else {
            if watch {
                // Clear the screen and go home.
                crate::out!("\x1b[2J\x1b[H");
            }
            crate::out!("{}", fleet_text(&r, sites));
        }
        if !watch {
            if r.states.failed > 0 {
                return Err(fail(
                    ExitCode::NodesFailed,
                    format!(
                        "{} failed to fetch or install it",
                        api::cli::count(r.states.failed, "node")
                    ),
                ));
            }
            return Ok(());
        }
        tokio::time::sleep(FLEET_WATCH_INTERVAL).await;
    }
}
