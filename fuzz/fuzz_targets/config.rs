//! Config files (`p2pd.toml`): parsed and checked as `p2pd run` and SIGHUP read them, every
//! section (trust keys, rate schedules, windows, install commands, bootstrap addresses).
//! What parses compares with itself as a reload would.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node::config::Config;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::parse(text, Path::new("p2pd.toml")) {
        assert!(
            config.changed_sections(&config).is_empty(),
            "a config differs from itself"
        );
        let _ = config.socket_mode();
        let _ = config.trust_policy();
        let _ = config.shaping.schedules();
        let _ = config.windows.windows();
    }
});
