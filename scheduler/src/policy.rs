//! The node's scheduling policy as `p2pd.toml` writes it: `[windows]` (download and install
//! windows, the emergency rule) and `[shaping]` (a rate schedule per traffic class), and
//! what they parse into. Here, not in the daemon's configuration, so that the simulator
//! reads a site's policy with the daemon's own code (its scenarios carry these sections
//! as they are).

use serde::{Deserialize, Serialize};

/// `[windows]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowsSection {
    /// IANA time zone the windows' start times are read in.
    #[serde(default = "default_zone")]
    pub zone: String,
    /// When releases may download; none: any time.
    #[serde(default)]
    pub download: Vec<WindowSpec>,
    /// When completed releases may be installed; none: any time.
    #[serde(default)]
    pub install: Vec<WindowSpec>,
    /// Critical releases with a CVSS score at or above this download outside the download
    /// window (still under the rate limits). Above 10 turns the rule off; releases marked
    /// emergency by their publisher always may.
    #[serde(default = "default_emergency_cvss")]
    pub emergency_critical_cvss: f64,
}

impl Default for WindowsSection {
    fn default() -> Self {
        Self {
            zone: default_zone(),
            download: Vec::new(),
            install: Vec::new(),
            emergency_critical_cvss: default_emergency_cvss(),
        }
    }
}

fn default_emergency_cvss() -> f64 {
    9.0
}

/// One window: a cron (5 fields) or Quartz (6-7 fields) start and an `HH:MM[:SS]` duration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// When it opens, e.g. `"0 22 * * *"` or `"0 0 2 ? * SAT"`.
    pub start: String,
    /// How long it stays open, e.g. `"07:00"`.
    pub duration: String,
}

/// The windows and policy `[windows]` describes.
#[derive(Debug, Clone)]
pub struct Windows {
    /// Download windows (empty: always open).
    pub download: Vec<crate::window::Window>,
    /// Install windows (empty: always open).
    pub install: Vec<crate::window::Window>,
    /// Which releases may ignore the download window.
    pub policy: crate::priority::EmergencyPolicy,
    /// The zone windows are read in, also for release windows that name none.
    pub zone: jiff::tz::TimeZone,
}

impl WindowsSection {
    /// The windows; an error names the setting.
    pub fn windows(&self) -> Result<Windows, (String, String)> {
        let parse = |name: &str, list: &[WindowSpec]| -> Result<Vec<_>, (String, String)> {
            list.iter()
                .enumerate()
                .map(|(i, w)| {
                    crate::window::Window::parse(&w.start, &w.duration, &self.zone)
                        .map_err(|e| (format!("windows.{name}[{i}]"), e.to_string()))
                })
                .collect()
        };
        let cvss = self.emergency_critical_cvss;
        if !(0.0..=100.0).contains(&cvss) {
            return Err((
                "windows.emergency_critical_cvss".into(),
                "a CVSS score from 0.0 to 10.0 (above 10 turns the rule off)".into(),
            ));
        }
        Ok(Windows {
            zone: crate::zone(&self.zone)
                .map_err(|e| ("windows.zone".to_owned(), e.to_string()))?,
            download: parse("download", &self.download)?,
            install: parse("install", &self.install)?,
            policy: crate::priority::EmergencyPolicy {
                critical_cvss_at_least: (cvss <= 10.0)
                    .then(|| protocol::Cvss((cvss * 10.0).round() as u8)),
            },
        })
    }
}

/// `[shaping]`: rate schedules of the data plane's traffic classes. WAN is traffic with
/// peers of other sites, LAN with peers of this site; `total` caps all of it together.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShapingSection {
    /// `false` turns shaping off altogether: no class is limited and no byte is counted
    /// against a bucket. For troubleshooting and for measuring what shaping costs.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// IANA time zone the rules' local times are in.
    #[serde(default = "default_zone")]
    pub zone: String,
    /// Chunk bytes received from other sites.
    #[serde(default)]
    pub wan_ingress: ClassRates,
    /// Chunk bytes sent to other sites.
    #[serde(default)]
    pub wan_egress: ClassRates,
    /// Chunk bytes sent to this site's peers.
    #[serde(default)]
    pub lan_egress: ClassRates,
    /// All chunk bytes, both directions, both classes.
    #[serde(default)]
    pub total: ClassRates,
}

impl Default for ShapingSection {
    fn default() -> Self {
        Self {
            enabled: true,
            zone: default_zone(),
            wan_ingress: ClassRates::default(),
            wan_egress: ClassRates::default(),
            lan_egress: ClassRates::default(),
            total: ClassRates::default(),
        }
    }
}

/// One class's schedule: a default rate and rules `DAYS HH:MM-HH:MM RATE`; where rules
/// overlap the lowest rate wins.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassRates {
    /// Rate when no rule applies: `unlimited`, `0`, or e.g. `80Mbit/s`, `10MB/s`.
    #[serde(default = "default_rate")]
    pub default: String,
    /// Rules, e.g. `"Mon-Fri 08:00-20:00 10Mbit/s"`.
    #[serde(default)]
    pub rules: Vec<String>,
}

impl Default for ClassRates {
    fn default() -> Self {
        Self {
            default: default_rate(),
            rules: Vec::new(),
        }
    }
}

fn default_zone() -> String {
    "UTC".into()
}

fn default_rate() -> String {
    "unlimited".into()
}

/// The four schedules `[shaping]` describes.
#[derive(Debug, Clone)]
pub struct RateSchedules {
    /// From other sites.
    pub wan_ingress: crate::rate::RateSchedule,
    /// To other sites.
    pub wan_egress: crate::rate::RateSchedule,
    /// To this site's peers.
    pub lan_egress: crate::rate::RateSchedule,
    /// Everything.
    pub total: crate::rate::RateSchedule,
    /// `false`: shaping is off (`[shaping] enabled`).
    pub enabled: bool,
}

impl ShapingSection {
    /// The schedules; an error names the setting.
    pub fn schedules(&self) -> Result<RateSchedules, (String, String)> {
        let zone = crate::zone(&self.zone).map_err(|e| ("shaping.zone".into(), e.to_string()))?;
        let class = |name: &str, c: &ClassRates| -> Result<_, (String, String)> {
            let default = c.default.parse().map_err(|e: crate::ScheduleError| {
                (format!("shaping.{name}.default"), e.to_string())
            })?;
            let mut rules = Vec::new();
            for (i, r) in c.rules.iter().enumerate() {
                rules.push(r.parse().map_err(|e: crate::ScheduleError| {
                    (format!("shaping.{name}.rules[{i}]"), e.to_string())
                })?);
            }
            Ok(crate::rate::RateSchedule {
                zone: zone.clone(),
                rules,
                default,
            })
        };
        Ok(RateSchedules {
            wan_ingress: class("wan_ingress", &self.wan_ingress)?,
            wan_egress: class("wan_egress", &self.wan_egress)?,
            lan_egress: class("lan_egress", &self.lan_egress)?,
            total: class("total", &self.total)?,
            enabled: self.enabled,
        })
    }
}

fn default_true() -> bool {
    true
}
