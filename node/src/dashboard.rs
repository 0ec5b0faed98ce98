//! The fleet dashboard (`[control] dashboard = true`): a read-only page on the metrics
//! listener that shows, live, every release this node knows with its progress across the
//! fleet, a grid of all sites coloured by state, and the failed nodes with their errors.
//!
//! Plain HTML, CSS and JavaScript compiled into the binary (`src/dashboard/`): no CDN, no
//! build step, nothing fetched but this node's own `dashboard/data` (the fleet reports of
//! [`store::fleet::Fleet::report`] as JSON), every two seconds. The grid draws one 22-pixel
//! cell per site in name order, 500 of them in about twenty rows; pointing at a cell shows
//! the site's figures.

use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// The page.
pub const INDEX_HTML: &str = include_str!("dashboard/index.html");
/// Its style sheet.
pub const CSS: &str = include_str!("dashboard/dashboard.css");
/// Its script.
pub const JS: &str = include_str!("dashboard/dashboard.js");

/// Releases the dashboard shows, newest first.
pub const RELEASES_MAX: usize = 8;

/// Failed nodes the failures panel lists, across the releases shown, newest first.
pub const FAILURES_MAX: usize = 200;

/// A static part of the page, never cached stale across daemon upgrades.
pub fn page(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, content_type),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// What the page draws.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DashboardData {
    /// This node's id, hex.
    pub node_id: String,
    /// Its site.
    pub site: String,
    /// Releases, newest first.
    pub releases: Vec<DashboardRelease>,
    /// The failed nodes of all of them (at most [`FAILURES_MAX`]), newest failure first.
    pub failures: Vec<store::fleet::FailedNode>,
}

/// A release and where it stands in the fleet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DashboardRelease {
    /// Release id, hex.
    pub id: String,
    /// Channel.
    pub channel: String,
    /// Version.
    pub version: u64,
    /// Severity.
    pub severity: String,
    /// The fleet view.
    pub report: store::fleet::FleetReport,
}
