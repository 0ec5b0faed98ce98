//! What operators write for a rollout (`p2pctl publish --target/--requires/--rings/--gate`,
//! a rollout file): parsed, and what parses prints back to text that parses to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{Gate, Requirement, Ring, Selector};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    match pick % 4 {
        0 => {
            if let Ok(s) = Selector::parse(text, "target") {
                let again = Selector::parse(&s.to_string(), "target");
                assert_eq!(again.as_ref(), Ok(&s), "a selector prints back: {text:?}");
            }
        }
        1 => {
            if let Ok(list) = Requirement::parse_list(text) {
                for r in &list {
                    let again = Requirement::parse(&r.to_string());
                    assert_eq!(again.as_ref(), Ok(r), "a requirement prints back: {text:?}");
                }
            }
        }
        2 => {
            if let Ok(rings) = Ring::parse_list(text) {
                let printed: Vec<String> = rings.iter().map(ToString::to_string).collect();
                let again = Ring::parse_list(&printed.join("; "));
                assert_eq!(again.as_ref(), Ok(&rings), "rings print back: {text:?}");
            }
        }
        _ => {
            if let Ok(g) = Gate::parse(text) {
                let again = Gate::parse(&g.to_string());
                assert_eq!(again.as_ref(), Ok(&g), "a gate prints back: {text:?}");
            }
        }
    }
});
